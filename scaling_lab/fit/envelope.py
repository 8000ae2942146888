"""Approach 1 of Hoffmann et al. 2022 (Sec. 3.1): the lower envelope of loss against compute.

From final losses only, the envelope is the Pareto frontier: a run is on it when no run with less (or equal)
compute reached a lower loss. The N and D of the frontier runs, regressed on C in log-log, give
N_opt ∝ C^a and D_opt ∝ C^b.
"""

from __future__ import annotations

import numpy as np


def frontier(flops: np.ndarray, loss: np.ndarray, weight: np.ndarray | None = None) -> np.ndarray:
    """Indices of the frontier runs in increasing compute, each repeated as often as the bootstrap resample
    ``weight`` drew it (multiplicities, scaling_lab.fit.stats.resample_weights; None = each run once), so a fit
    to them is the estimate on the resample itself (Efron & Tibshirani 1993, Ch. 6), not on the runs it drew."""
    counts = np.ones(len(loss), dtype=int) if weight is None else np.rint(weight).astype(int)
    candidates = np.flatnonzero(counts > 0)
    order = candidates[np.lexsort((loss[candidates], flops[candidates]))]
    best, keep = np.inf, []
    for i in order:
        # an exact copy of a frontier run (same C and loss) is on it too, as the same run drawn twice would be
        if loss[i] < best or (keep and flops[i] == flops[keep[-1]] and loss[i] == best):
            keep.append(i)
            best = loss[i]
    keep = np.array(keep, dtype=int)
    return np.repeat(keep, counts[keep])


def fit_envelope(params, tokens, flops, loss, weight=None) -> dict:
    """N_opt ∝ C^a and D_opt ∝ C^b by least squares in log-log over the frontier runs (Hoffmann et al. 2022,
    Sec. 3.1), each counted as often as ``weight`` drew it; a and b are None below 3 distinct frontier runs."""
    idx = frontier(flops, loss, weight)
    out = {"runs": idx.tolist(), "a": None, "b": None}
    if np.unique(idx).size >= 3 and np.unique(params[idx]).size >= 2:
        log_c = np.log(flops[idx])
        out["a"] = float(np.polyfit(log_c, np.log(params[idx]), 1)[0])
        out["b"] = float(np.polyfit(log_c, np.log(tokens[idx]), 1)[0])
    return out
