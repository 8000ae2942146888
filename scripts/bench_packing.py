"""Aggregate training throughput with k runs packed onto one device, through the real sweep path.

    python scripts/bench_packing.py --ks 1,2 --size tiny-1 --tokens 2e5                 # CPU smoke
    python scripts/bench_packing.py --ks 1,2,4 --size gpt-7m --tokens 5e7 -- \\
        model.block_size=1024 train.batch_size=64 data.tokenizer=bpe data.bpe_vocab_size=50304

For each k: one `scaling-lab sweep` of k runs of the same size and budget (seeds 0..k-1, so k distinct run ids)
with `hydra/launcher=packed trainer.runs_per_device=k`, all k starting together on one device. Per k it prints the
runs' own steady training tokens/s (each record's `throughput.steady_tokens_per_s`: after its first steps, while the
others ran beside it, validation left out), their sum (the aggregate), the aggregate over one run of the first k
(list 1 first), the same sum over the runs' whole training loops (compilation included), and the end-to-end rate:
all tokens over the wall time from the first process start to the last process end (start-up and data included).
Issue 5, target 3: the aggregate for the smallest size should reach >= 2x a single run. Anything after `--` is
passed to every sweep as Hydra overrides.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from scaling_lab import layout, records


def sweep(k: int, args: argparse.Namespace, extra: list[str], results: Path) -> dict:
    command = [sys.executable, "-m", "scaling_lab.cli", "sweep", "sweep=smoke", "sweep.fit=false", "logger=none",
               "progress=false", "train.eval_points=1", "train.checkpoint_every=0", f"model.name={args.size}",
               f"train.tokens={int(args.tokens)}", "seed=" + ",".join(str(s) for s in range(k)),
               "hydra/launcher=packed", f"trainer.runs_per_device={k}", f"results_dir={results}", *extra]
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"k={k}: the sweep failed:\n{proc.stderr[-3000:]}")
    recs = [records.read_record(p) for p in layout.record_paths(results)]
    if len(recs) != k or any(r["status"] != "completed" for r in recs):
        sys.exit(f"k={k}: expected {k} completed runs in {results}, got {[r['status'] for r in recs]}")
    jobs = [json.loads(line) for path in layout.packed_journals(results) for line in path.read_text().splitlines()]
    per_run = [r["throughput"]["steady_tokens_per_s"] for r in recs]
    if None in per_run:
        sys.exit(f"k={k}: a run too short for a steady rate; raise --tokens")
    wall = max(j["ended"] for j in jobs) - min(j["started"] for j in jobs)
    return {"k": k, "params": recs[0]["params"], "per_run": per_run, "aggregate": sum(per_run),
            "whole_loops": sum(r["throughput"]["tokens_per_s"] for r in recs),
            "end_to_end": sum(r["tokens"] for r in recs) / wall, "wall": wall,
            "device": recs[0]["hardware"].get("device")}


def main() -> None:
    argv = sys.argv[1:]
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ks", default="1,2,4", help="runs per device to measure, comma-separated")
    parser.add_argument("--size", default="gpt-7m", help="a named shape (scaling_lab/model/config.py SHAPES)")
    parser.add_argument("--tokens", type=float, default=5e7, help="training tokens per run (make runs last a while)")
    parser.add_argument("--results", default=None, help="where the sweeps write (default: a temporary directory)")
    args = parser.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    root = Path(args.results or tempfile.mkdtemp(prefix="bench-packing-"))
    rows = []
    for k in (int(k) for k in args.ks.split(",")):
        rows.append(sweep(k, args, extra, root / f"k{k}"))
        r = rows[-1]
        if len(rows) == 1:
            print(f"{args.size} (N = {r['params']:,}), {int(args.tokens):,} tokens per run, on {r['device']} "
                  f"({os.cpu_count()} CPUs); results in {root}")
            print(f"{'k':>3} {'per-run steady tokens/s':>40} {'aggregate':>12} {'vs k=' + str(r['k']):>7} "
                  f"{'whole loops':>12} {'end-to-end':>12} {'wall':>7}")
        single = rows[0]["aggregate"] / rows[0]["k"]
        per_run = ", ".join(f"{t:,.0f}" for t in r["per_run"])
        print(f"{r['k']:>3} {per_run:>40} {r['aggregate']:>12,.0f} {r['aggregate'] / single:>6.2f}x "
              f"{r['whole_loops']:>12,.0f} {r['end_to_end']:>12,.0f} {r['wall']:>6.1f}s", flush=True)


if __name__ == "__main__":
    main()
