"""The README's throughput table from the JSON lines of scripts/bench_throughput.py --json (its logs work as they are).

    python scripts/throughput_table.py yardstick-small.log yardstick-large.log > yardstick.md

One row per size in the order read; a size measured twice keeps its last row. The nanoGPT columns appear when some
row was measured at issue 5's yardstick shapes. Rows from different devices, peaks or settings are refused: one
table, one measurement setup.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def rows_from(paths: list[Path]) -> list[dict]:
    rows: dict[str, dict] = {}
    for path in paths:
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                row = json.loads(line)
                rows[row["size"]] = row
    return list(rows.values())


def markdown(rows: list[dict]) -> str:
    if not rows:
        raise ValueError("no JSON rows (run bench_throughput.py with --json)")
    setups = {(r["device_name"], json.dumps(r["settings"], sort_keys=True)) for r in rows}
    if len(setups) > 1:
        raise ValueError(f"rows from {len(setups)} different devices or settings; make one table per setup")
    first, yardstick = rows[0], any("yardstick_tokens_per_s" in r for r in rows)
    s = first["settings"]
    peaks = sorted(r["peak_tflops"] for r in rows)
    head = (f"Measured {first['date']} on {first['device_name']} (torch {first['torch']}): batches of {s['batch']} x "
            f"{s['block']} tokens, vocabulary {s['vocab']}, compile={s['compile']} mode={s['compile_mode']}, "
            f"loss_chunk_rows={s['loss_chunk_rows']}, micro-batch {s['micro_batch']}, {s['warmup']} untimed + "
            f"{s['steps']} timed steps; MFU against the measured matmul peak of {peaks[0]:.1f}"
            + (f"-{peaks[-1]:.1f}" if peaks[-1] - peaks[0] >= 0.05 else "") + " TFLOP/s, FLOPs as 6N + 12 L d T.")
    cols = ["size", "params", "micro-batch", "Lightning tokens/s", "bare loop tokens/s", "Lightning / bare"]
    cols += ["nanoGPT tokens/s", "Lightning / nanoGPT"] if yardstick else []
    cols += ["TFLOP/s (Lightning)", "MFU (Lightning)", "MFU (bare)"]
    lines = [head, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        cells = [r["size"], f"{r['params']:,}", str(r["micro_batch"]), f"{r['lightning_tokens_per_s']:,.0f}",
                 f"{r['bare_tokens_per_s']:,.0f}", f"{r['lightning_over_bare']:.3f}"]
        if yardstick:
            cells += ([f"{r['yardstick_tokens_per_s']:,}", f"{r['lightning_over_yardstick']:.2f}x"]
                      if "yardstick_tokens_per_s" in r else ["-", "-"])
        cells += [f"{r['lightning_tflops']:.3g}", f"{r['lightning_mfu']:.1%}", f"{r['bare_mfu']:.1%}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", type=Path, help="bench_throughput.py --json output (logs or JSON lines)")
    try:
        print(markdown(rows_from(parser.parse_args().logs)))
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"throughput_table.py: {e}")


if __name__ == "__main__":
    main()
