"""scripts/wsd_vs_cosine.py end to end on a tiny grid: both sweeps run, every (size, budget, LR) is reported."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from support import ONE_THREAD, isolated_env

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).parents[1] / "scripts" / "wsd_vs_cosine.py"


def test_branched_wsd_and_cosine_are_compared_at_every_lr_and_at_each_ones_best(tmp_path):
    small = ["train.warmup_tokens=2048", "data.val_tokens=2048", "train.eval_points=1"]
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "tiny-1", "--tokens", "16384,32768", "--lrs", "3e-3,1e-2",
         "--results", str(tmp_path), "--wsd", *small, "--cosine", *small],
        capture_output=True, text=True, timeout=900, env=isolated_env(tmp_path / "cache", **ONE_THREAD))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    rows = re.findall(r"^tiny-1 +([\d,]+) (cosine|wsd) +([\d.]+) +([\d.]+)$", out, re.M)
    assert sorted((t, s) for t, s, _, _ in rows) == [("16,384", "cosine"), ("16,384", "wsd"),
                                                     ("32,768", "cosine"), ("32,768", "wsd")]
    best = re.findall(r"^tiny-1 +([\d,]+) +([\d.]+) +([\d.e+-]+) +([\d.]+) +([\d.e+-]+) +([+-][\d.]+)% +(yes|trunk)$",
                      out, re.M)
    assert [(t, branch) for t, *_, branch in best] == [("16,384", "yes"), ("32,768", "trunk")]
    # the summary compares each schedule at its best LR of the table
    by_key = {(t, s): min(float(a), float(b)) for t, s, a, b in rows}
    for tokens, wsd_loss, _, cos_loss, _, rel, _ in best:
        assert float(wsd_loss) == pytest.approx(by_key[(tokens, "wsd")], abs=1e-4)
        assert float(cos_loss) == pytest.approx(by_key[(tokens, "cosine")], abs=1e-4)
        assert float(rel) == pytest.approx(100 * (float(wsd_loss) - float(cos_loss)) / float(cos_loss), abs=0.02)
    assert "largest |relative difference|" in out and "tokens trained: branched WSD" in out
