"""Adaptive IsoFLOP: when a budget's lowest loss sits at its smallest or largest size, add sizes beyond that edge.

Approach 2 of Hoffmann et al. 2022 (Sec. 3.2) reads each budget's optimum off a parabola in log N; a minimum at
the edge of the sizes is not bracketed, so the fit cannot use that budget. With `sweep.extend_edges=true` the
sweep looks at each budget's finished runs and trains `sweep.extend_sizes` more sizes past the edge, continuing
the budget's log spacing, at the same compute (one extension round).
"""

from __future__ import annotations

import math
from collections import defaultdict

from scaling_lab import layout, records
from scaling_lab.sweep import designs
from scaling_lab.train.run import ConfigError


def edge_targets(points: list[tuple[int, float]], step: float, count: int) -> list[float]:
    """Target N past the edge that holds the lowest loss, continuing the spacing `step`; [] if it is interior.

    points: (N, loss) of one budget; repeated N (an LR sweep) count with their best loss.
    """
    best: dict[int, float] = {}
    for n, loss in points:
        best[n] = min(loss, best.get(n, math.inf))
    sizes = sorted(best)
    if len(sizes) < 2:
        return []
    lowest = min(sizes, key=best.__getitem__)
    if lowest == sizes[0]:
        return [sizes[0] / step**k for k in range(1, count + 1)]
    if lowest == sizes[-1]:
        return [sizes[-1] * step**k for k in range(1, count + 1)]
    return []


def extension(design: designs.Design, entries: list[dict], results_dir: str,
              count: int) -> tuple[list[designs.Planned], list[float]]:
    """(the runs to add, the budgets whose minimum is at an edge), from the completed records of the manifest's
    IsoFLOP entries. An edge budget may get no run: its next sizes were already trained, or need fewer tokens than
    one sequence."""
    losses = {}
    for path in layout.record_paths(results_dir):
        rec = records.read_record(path)
        if rec["status"] == "completed":
            losses[rec["run_id"]] = rec["final_val_loss"]
    points, known = defaultdict(list), defaultdict(set)
    for e in entries:
        if e.get("budget") is None:
            continue
        known[e["budget"]].add(e["params"])
        if e["run_id"] in losses:
            points[e["budget"]].append((e["params"], losses[e["run_id"]]))
    extra, edges = [], []
    for budget, pts in points.items():
        targets = edge_targets(pts, design.step, count)
        edges += [budget] if targets else []
        for target in targets:
            try:
                extra += designs.budget_runs(design, budget, [target], known[budget])
            except ConfigError as e:  # past the large edge a budget can run out of tokens: say so, go on
                print(f"edge extension stops: {e}")
    return extra, sorted(edges)

