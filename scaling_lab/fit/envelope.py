"""Approach 1 of Hoffmann et al. 2022 (Sec. 3.1): the lower envelope of loss against compute.

From final losses only, the envelope is the Pareto frontier: a run is on it when no run with less (or equal)
compute reached a lower loss. The N and D of the frontier runs, regressed on C in log-log, give
N_opt ∝ C^a and D_opt ∝ C^b.
"""

from __future__ import annotations

import numpy as np


def frontier(flops: np.ndarray, loss: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Indices of the frontier runs in increasing compute (only runs with weight > 0 take part)."""
    candidates = np.arange(len(loss)) if weight is None else np.flatnonzero(weight > 0)
    order = candidates[np.lexsort((loss[candidates], flops[candidates]))]
    best, keep = np.inf, []
    for i in order:
        if loss[i] < best:
            keep.append(i)
            best = loss[i]
    return np.array(keep, dtype=int)


def fit_envelope(params, tokens, flops, loss, weight=None) -> dict:
    idx = frontier(flops, loss, weight)
    out = {"runs": idx.tolist(), "a": None, "b": None}
    if idx.size >= 3 and np.unique(params[idx]).size >= 2:
        log_c = np.log(flops[idx])
        out["a"] = float(np.polyfit(log_c, np.log(params[idx]), 1)[0])
        out["b"] = float(np.polyfit(log_c, np.log(tokens[idx]), 1)[0])
    return out
