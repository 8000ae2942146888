"""The shared numeric config checks (scaling_lab/checks.py): what passes, what fails, and the one line it fails with."""

import math
import re

import pytest

from scaling_lab import checks


class StageError(ValueError):
    pass


@pytest.mark.parametrize("value, interval", [(0, "[0, 1)"), (0.5, "(0, 1)"), (1, "(0, 1]"), (-3.5, "(-inf, inf)"),
                                             (10**30, "(0, inf)")])
def test_numbers_inside_their_interval_pass_through(value, interval):
    assert checks.number("k", value, interval) == value


@pytest.mark.parametrize("value, interval", [(0, "(0, 1]"), (1, "[0, 1)"), (math.inf, "(0, inf)"),
                                             (math.nan, "(-inf, inf)"), (True, "[0, 1]"), ("0.5", "(0, 1)"),
                                             (None, "(0, 1)")])
def test_anything_else_fails_naming_the_key_and_interval(value, interval):
    with pytest.raises(StageError) as caught:
        checks.number("train.x", value, interval, error=StageError)
    assert str(caught.value) == f"train.x must be a number in {interval}, got {value!r}"


def test_besides_admits_named_non_numbers_and_says_so():
    assert checks.number("k", None, "(0, 1)", besides=(None,)) is None
    assert checks.count("k", "auto", besides=("auto", None)) == "auto"
    with pytest.raises(ValueError, match=r"^k must be an integer >= 1 or auto, null, got 'many'$"):
        checks.count("k", "many", besides=("auto", None))


@pytest.mark.parametrize("value, low, high, bounds", [(0, 1, math.inf, ">= 1"), (2.0, 1, math.inf, ">= 1"),
                                                     (True, 0, math.inf, ">= 0"), (5, 1, 4, "in [1, 4]")])
def test_counts_are_integers_in_range_and_not_bools(value, low, high, bounds):
    with pytest.raises(StageError, match=f"^n must be an integer {re.escape(bounds)}, got {re.escape(repr(value))}$"):
        checks.count("n", value, low, high, error=StageError)
    assert checks.count("n", low, low, high) == low

