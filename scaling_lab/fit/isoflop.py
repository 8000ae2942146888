"""Approach 2 of Hoffmann et al. 2022 (Sec. 3.2): IsoFLOP profiles.

Runs are bucketed by compute; in each budget a parabola in log N through the sizes nearest the lowest loss
gives N_opt (and one in log D gives D_opt); then N_opt ∝ C^a and D_opt ∝ C^b by least squares in log-log.
A budget whose lowest loss sits at the smallest or largest size it tried is rejected: its optimum may lie
outside the grid (the rule of Porian et al. 2024, App. B, and of their released analysis).
"""

from __future__ import annotations

import numpy as np


def buckets(flops: np.ndarray, tol_decades: float) -> np.ndarray:
    """Bucket label per run: sorted by compute, a run joins the current bucket while it is within
    tol_decades of the bucket's smallest compute."""
    log_c = np.log10(flops)
    order = np.argsort(log_c, kind="stable")
    labels = np.empty(len(flops), dtype=int)
    label, first = -1, -np.inf
    for i in order:
        if log_c[i] - first > tol_decades:
            label, first = label + 1, log_c[i]
        labels[i] = label
    return labels


def budget_optimum(x: np.ndarray, loss: np.ndarray, weight: np.ndarray, window: int) -> tuple[float | None, str]:
    """Vertex of a parabola of loss in x (log N or log D) through the `window` values nearest the lowest loss,
    or None and the reason the budget is rejected. Weights are bootstrap multiplicities (0 = not drawn)."""
    drawn = weight > 0
    xs = np.unique(x[drawn])
    if xs.size < 3:
        return None, f"{xs.size} distinct sizes (a parabola needs 3)"
    # the lowest loss of each distinct size (several runs of one size: the best, as for (N, D) cells)
    best = np.array([loss[drawn & (x == v)].min() for v in xs])
    i = int(np.argmin(best))
    if i == 0 or i == xs.size - 1:
        return None, "lowest loss at the edge of the size grid"
    half = (window - 1) // 2  # window is odd (fit.isoflop.window, run.check_settings): best size +- half
    lo, hi = max(0, i - half), min(xs.size, i + half + 1)
    sel = drawn & (x >= xs[lo]) & (x <= xs[hi - 1])
    w = weight[sel]
    # centred on the best size so the least-squares problem stays well conditioned
    xc = x[sel] - xs[i]
    design = np.stack([xc * xc, xc, np.ones_like(xc)], axis=1)
    coef, *_ = np.linalg.lstsq(design * np.sqrt(w)[:, None], loss[sel] * np.sqrt(w), rcond=None)
    if coef[0] <= 0:
        return None, "parabola not convex"
    vertex = xs[i] - coef[1] / (2 * coef[0])
    if not xs[lo] <= vertex <= xs[hi - 1]:
        return None, "parabola minimum outside the sizes it was fitted to"
    return float(vertex), ""


def fit_isoflop(params, tokens, flops, loss, labels, *, window: int, weight=None) -> dict:
    """Per-budget optima and the exponents a (N_opt ∝ C^a) and b (D_opt ∝ C^b)."""
    weight = np.ones(len(loss)) if weight is None else weight
    log_n, log_d = np.log(params), np.log(tokens)
    rows = []
    for label in np.unique(labels):
        members = labels == label
        budget = float(np.exp(np.mean(np.log(flops[members]))))
        n_opt, why_n = budget_optimum(log_n[members], loss[members], weight[members], window)
        d_opt, why_d = budget_optimum(log_d[members], loss[members], weight[members], window)
        used = n_opt is not None and d_opt is not None
        rows.append({"compute": budget, "runs": int(members.sum()), "sizes": int(np.unique(log_n[members]).size),
                     "used": used, "reason": "" if used else (why_n or why_d),
                     "N_opt": float(np.exp(n_opt)) if used else None,
                     "D_opt": float(np.exp(d_opt)) if used else None})
    used = [r for r in rows if r["used"]]
    out = {"budgets": rows, "n_budgets_used": len(used), "a": None, "b": None}
    if len(used) >= 2:
        log_c = np.log([r["compute"] for r in used])
        out["a"] = float(np.polyfit(log_c, np.log([r["N_opt"] for r in used]), 1)[0])
        out["b"] = float(np.polyfit(log_c, np.log([r["D_opt"] for r in used]), 1)[0])
    return out
