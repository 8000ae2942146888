"""Bootstrap weights are multiplicities: a run drawn twice counts twice, as if its row were in the table twice."""

import numpy as np
import pytest

from scaling_lab.fit.envelope import fit_envelope, frontier
from scaling_lab.fit.verdict import exponent_change, local_exponents

FLOOR = 1.7
CENTERS = np.linspace(17, 21, 6)


def frontier_and_others():
    """12 frontier runs from 1e17 to 1e21 FLOPs with noisy N and loss, and 12 runs above them; (N, D, C, L)."""
    rng = np.random.default_rng(0)
    c = np.logspace(17, 21, 12)
    loss = FLOOR + 2e3 * c ** -0.17 * np.exp(0.02 * rng.normal(size=c.size))
    n = 0.1 * (c / 6) ** 0.5 * np.exp(0.1 * rng.normal(size=c.size))
    c, n, loss = np.concatenate([c, 1.01 * c]), np.concatenate([n, 2 * n]), np.concatenate([loss, loss + 0.05])
    return n, c / (6 * n), c, loss


def estimates(n, d, c, loss, weight=None):
    env = fit_envelope(n, d, c, loss, weight)
    return np.array([env["a"], env["b"], *local_exponents(c, loss, FLOOR, CENTERS, 0.8, weight),
                     *exponent_change(c, loss, FLOOR, weight)], dtype=float)


@pytest.mark.parametrize("twice, never", [(7, 2), (0, 11), (11, 5)])
def test_a_run_drawn_twice_counts_as_two_rows(twice, never):
    n, d, c, loss = frontier_and_others()
    weight = np.ones(len(loss))
    weight[twice], weight[never] = 2.0, 0.0
    rows = np.concatenate([np.delete(np.arange(len(loss)), never), [twice]])
    as_rows = estimates(*(x[rows] for x in (n, d, c, loss)))
    assert np.isfinite(as_rows).all()
    np.testing.assert_allclose(estimates(n, d, c, loss, weight), as_rows, rtol=1e-10)
    # the drawn-or-not mask the intervals once used gives another estimate: it lost the second copy
    assert np.abs(estimates(n, d, c, loss, (weight > 0).astype(float)) - as_rows).max() > 1e-3


def test_frontier_lists_a_run_as_often_as_it_was_drawn():
    n, _, c, loss = frontier_and_others()
    weight = np.zeros(len(loss))
    weight[[3, 5, 15]] = [1.0, 3.0, 2.0]  # 15 lies above the frontier: drawn, but dominated by run 3
    assert frontier(c, loss, weight).tolist() == [3, 5, 5, 5]
    assert frontier(c, loss).tolist() == list(range(12))


def test_too_few_distinct_frontier_runs_give_no_estimate_however_often_drawn():
    n, d, c, loss = frontier_and_others()
    weight = np.zeros(len(loss))
    weight[[3, 8]] = [5.0, 5.0]
    assert fit_envelope(n, d, c, loss, weight)["a"] is None
    assert np.isnan(exponent_change(c, loss, FLOOR, weight)).all()
    assert np.isnan(local_exponents(c, loss, FLOOR, CENTERS, 0.8, weight)).all()
