"""The throughput benchmark runs on CPU at tiny sizes and prints its table (speed itself is not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bench_prints_one_row_per_path_and_a_ratio_per_size():
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_throughput.py"), "--device", "cpu", "--sizes", "tiny-1,tiny-2",
         "--batch", "4", "--block", "32", "--warmup", "1", "--steps", "3", "--micro-batch", "3",
         "--loss-chunk-rows", "50", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("device cpu") and "matmul peak" in lines[0]
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    assert [r["size"] for r in rows] == ["tiny-1", "tiny-2"]
    for row in rows:
        table = [line.split() for line in lines if line.startswith(row["size"] + " ")]
        assert [cells[2] for cells in table[:2]] == ["lightning", "bare"] and table[0][-1] == "3"  # micro-batch 3
        assert row["micro_batch"] == 3 and row["lightning_tokens_per_s"] > 0 and row["bare_tokens_per_s"] > 0
        assert row["lightning_over_bare"] == pytest.approx(row["lightning_tokens_per_s"] / row["bare_tokens_per_s"])
        assert 0 < row["lightning_mfu"] < 1 and "lightning_over_yardstick" not in row  # not the yardstick's shapes
        assert f"{row['size']:<10} lightning / bare = {row['lightning_over_bare']:.3f}" in lines
