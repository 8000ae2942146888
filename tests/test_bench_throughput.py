"""The throughput benchmark runs on CPU at tiny sizes and prints its table (speed itself is not asserted here); its JSON
lines become the README's Markdown table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import throughput_table  # noqa: E402 - a script, importable from scripts/


@pytest.mark.slow
def test_bench_prints_one_row_per_path_and_a_ratio_per_size(tmp_path):
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

    log = tmp_path / "bench.log"
    log.write_text(proc.stdout)
    table = subprocess.run([sys.executable, str(ROOT / "scripts" / "throughput_table.py"), str(log)],
                           capture_output=True, text=True, check=True).stdout.splitlines()
    assert table[2].startswith("| size | params | micro-batch | Lightning tokens/s |") and "nanoGPT" not in table[2]
    for line, row in zip(table[4:], rows, strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [row["size"], f"{row['params']:,}", "3"]
        assert cells[5] == f"{row['lightning_over_bare']:.3f}"


def _row(size: str, lightning: float, **extra) -> dict:
    settings = {"device": "cuda", "batch": 64, "block": 1024, "vocab": 50304, "warmup": 10, "steps": 30,
                "compile": "auto", "compile_mode": "reduce-overhead", "loss_chunk_rows": 4096, "micro_batch": "auto",
                "log_every": 10}
    return {"size": size, "params": 6_800_000, "micro_batch": 64, "lightning_tokens_per_s": lightning,
            "bare_tokens_per_s": lightning / 0.98, "lightning_over_bare": 0.98, "lightning_tflops": 100.0,
            "lightning_mfu": 0.125, "bare_mfu": 0.128, "device": "cuda", "device_name": "NVIDIA H100 80GB HBM3",
            "torch": "2.11.0", "date": "2026-11-24", "peak_tflops": 794.5, "settings": settings, **extra}


def test_table_compares_with_nanogpt_where_measured_at_its_shapes_and_refuses_mixed_setups(tmp_path):
    small = tmp_path / "small.log"
    small.write_text("device cuda ...\n" + json.dumps(_row("gpt-7m", 3_700_000, yardstick_tokens_per_s=2_855_000,
                                                             lightning_over_yardstick=3_700_000 / 2_855_000)) + "\n")
    large = tmp_path / "large.log"
    large.write_text(json.dumps(_row("tiny-9", 1_000_000)) + "\n")
    lines = throughput_table.markdown(throughput_table.rows_from([small, large])).splitlines()
    assert "NVIDIA H100 80GB HBM3" in lines[0] and "794.5 TFLOP/s" in lines[0]
    assert lines[2] == ("| size | params | micro-batch | Lightning tokens/s | bare loop tokens/s | Lightning / bare | "
                        "nanoGPT tokens/s | Lightning / nanoGPT | TFLOP/s (Lightning) | MFU (Lightning) | MFU (bare) |")
    assert lines[4] == "| gpt-7m | 6,800,000 | 64 | 3,700,000 | 3,775,510 | 0.980 | 2,855,000 | 1.30x | 100 | 12.5% | 12.8% |"
    assert lines[5].split(" | ")[6:8] == ["-", "-"]
    other = _row("gpt-16m", 1.0)
    other["settings"] = {**other["settings"], "compile_mode": "default"}
    large.write_text(json.dumps(other) + "\n")
    with pytest.raises(ValueError, match="different devices or settings"):
        throughput_table.markdown(throughput_table.rows_from([small, large]))
