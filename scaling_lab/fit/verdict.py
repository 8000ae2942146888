"""Diminishing returns, decided from three pieces of evidence.

A power law with exponent < 1 already gives smaller absolute gains per decade; that is not what is asked.
The question is whether the high-compute end falls short of what the law fitted below predicts: the exponent
of the reducible loss L - E decays along the compute frontier, or a floor appears above the fitted E.

1. local exponent: -d log(L - E) / d log C along the frontier (lower half against upper half), bootstrapped;
2. single against broken power law on the frontier (scaling_lab.fit.single_axis.compare_broken);
3. backtest: the Approach 3 law fitted below a compute cut predicts the runs above it.

E in 1 and 2 is the floor fitted BELOW the cut: fitted on all runs, E rises to absorb a floor that appears
only at the top, and the flattening it should reveal disappears into it.

Each piece says diminishing, accelerating, consistent (with one law) or undecided; the verdict needs them
to agree (see ``decide``).
"""

from __future__ import annotations

import numpy as np

from scaling_lab.fit.envelope import frontier
from scaling_lab.fit.parametric import bootstrap_fit, fit_grid, predict
from scaling_lab.fit.stats import interval, resample_weights


def local_exponents(flops, loss, floor, centers, bandwidth, weight=None) -> np.ndarray:
    """Local exponent of the reducible loss at each centre (log10 C): a Gaussian-kernel weighted linear
    regression of log(L - E) on log C over the frontier runs (local-linear smoothing, Fan & Gijbels 1996,
    Ch. 3), a run drawn k times by the resample ``weight`` counting k times; NaN where fewer than 3 distinct
    frontier runs carry weight."""
    idx = frontier(flops, loss, weight)
    above = loss[idx] - floor
    idx, above = idx[above > 0], above[above > 0]
    out = np.full(len(centers), np.nan)
    if np.unique(idx).size < 3:
        return out
    lx, ly = np.log10(flops[idx]), np.log(above)
    for j, c in enumerate(centers):
        w = np.exp(-0.5 * ((lx - c) / bandwidth) ** 2)
        if np.unique(idx[w > 0.05]).size < 3:
            continue
        xm, ym = np.average(lx, weights=w), np.average(ly, weights=w)
        var = np.average((lx - xm) ** 2, weights=w)
        out[j] = -np.average((lx - xm) * (ly - ym), weights=w) / var / np.log(10)
    return out


def exponent_change(flops, loss, floor, weight=None) -> tuple[float, float, float]:
    """(exponent of the lower half of the frontier, of the upper half, upper - lower), least squares of
    log(L - E) on log C in each half, a run drawn k times by the resample ``weight`` counting k times; NaN
    when a half has fewer than 3 distinct runs above the floor."""
    idx = frontier(flops, loss, weight)
    above = loss[idx] - floor
    idx, above = idx[above > 0], above[above > 0]
    lx, ly = np.log(flops[idx]), np.log(above)
    halves = (slice(None, idx.size // 2), slice(idx.size // 2, None))
    if any(np.unique(idx[h]).size < 3 for h in halves):
        return np.nan, np.nan, np.nan
    lower, upper = (-np.polyfit(lx[h], ly[h], 1)[0] for h in halves)
    return float(lower), float(upper), float(upper - lower)


def backtest(params, tokens, flops, loss, cut, *, delta, resamples, n_seeds, check, rng,
             confidence) -> tuple[dict, np.ndarray | None]:
    """Fit Approach 3 on the runs with C <= cut and predict the others, with prediction intervals from the
    bootstrap of the fit plus resampled residual noise of the runs below the cut; n_seeds and check are the
    fit's bootstrap_seeds and bootstrap_check, as for the fit on all runs. Returns the result and the
    bootstrap samples of the below-cut E (None when there is no backtest)."""
    below = flops <= cut
    if below.sum() < 8 or (~below).sum() < 2:
        return {"available": False, "reason": f"{int(below.sum())} runs below the cut and {int((~below).sum())} "
                                              "above; a backtest needs 8 and 2"}, None
    if np.unique(params[below]).size < 2 or np.unique(tokens[below]).size < 2:
        return {"available": False, "reason": "the runs below the cut do not vary both N and D"}, None
    log_n, log_d, log_l = np.log(params[below]), np.log(tokens[below]), np.log(loss[below])
    grid = fit_grid(log_n, log_d, log_l, delta=delta, n_seeds=n_seeds)
    boot = bootstrap_fit(log_n, log_d, log_l, grid, resample_weights(rng, int(below.sum()), resamples), delta=delta,
                         check=check, rng=rng).thetas
    held = ~below
    pred = np.log(predict(grid.theta, params[held], tokens[held]))
    pred_boot = np.log(predict(boot[:, None, :], params[held][None], tokens[held][None]))
    resid = log_l - np.log(predict(grid.theta, params[below], tokens[below]))
    # fitted residuals understate the noise by the 5 parameters they absorbed (Davison & Hinkley 1997, Sec. 6.2)
    resid = (resid - np.median(resid)) * np.sqrt(below.sum() / (below.sum() - 5))
    noise = rng.choice(resid, size=pred_boot.shape, replace=True)
    tail = 50 * (1 - confidence)
    lo, hi = np.percentile(pred_boot + noise, [tail, 100 - tail], axis=0)
    observed = np.log(loss[held])
    error = observed - pred  # > 0: the runs above the cut did worse than the law predicted
    # what the mean error would look like if the law held: parameter uncertainty plus noise
    null = np.mean(pred[None] - pred_boot + noise, axis=1)
    mean_error = float(np.mean(error))
    # two-sided bootstrap p-value: twice the smaller tail of the null at the observed mean error (Davison &
    # Hinkley 1997, Ch. 4); the 1 / (R + 1) below keeps it off 0 as (1 + #) / (R + 1) does (their Sec. 4.2)
    p = 2 * min(np.mean(null >= mean_error), np.mean(null <= mean_error))
    return {
        "available": True, "cut": float(cut), "n_fit": int(below.sum()), "n_held_out": int(held.sum()),
        "E": float(np.exp(grid.theta[2])), "alpha": float(grid.theta[3]), "beta": float(grid.theta[4]),
        "mean_log_error": mean_error, "p_value": float(min(1.0, p + 1.0 / (resamples + 1))),
        "coverage": float(np.mean((observed >= lo) & (observed <= hi))), "confidence": confidence,
        "null_interval": interval(null, confidence),
        "points": [{"compute": float(c), "N": float(n), "D": float(d), "loss": float(l), "predicted": float(np.exp(p_)),
                    "lo": float(np.exp(a)), "hi": float(np.exp(b))}
                   for c, n, d, l, p_, a, b in zip(flops[held], params[held], tokens[held], loss[held], pred, lo, hi)],
    }, np.exp(boot[:, 2])


def judge_exponent(change_ci, lower, confidence, material) -> tuple[str, str]:
    if change_ci is None or not np.isfinite(lower):
        return "undecided", "too few frontier runs above E for two halves of 3"
    lo, hi = change_ci
    level = f"{100 * confidence:.0f}%"
    if hi < 0:
        return "diminishing", f"the upper half's exponent is lower ({level} interval of the change [{lo:.3g}, {hi:.3g}])"
    if lo > 0:
        return "accelerating", f"the upper half's exponent is higher ({level} interval [{lo:.3g}, {hi:.3g}])"
    if lo > -material * abs(lower) and hi < material * abs(lower):
        return "consistent", f"no change; the {level} interval [{lo:.3g}, {hi:.3g}] rules out a change of {material:.0%}"
    return "undecided", (f"the {level} interval of the change [{lo:.3g}, {hi:.3g}] is too wide to rule out a change "
                         f"of {material:.0%} of the exponent {lower:.3g}")


def judge_break(result, confidence) -> tuple[str, str]:
    if result is None:
        return "undecided", "fewer than 6 frontier runs: no broken power law"
    alpha = 1 - confidence
    if result["p_value"] >= alpha:
        return "consistent", f"one power law suffices (bootstrap p = {result['p_value']:.3f})"
    if result["exponent_above"] < result["exponent_below"]:
        return "diminishing", (f"a break at C = {result['break']:.3g} lowers the exponent from "
                               f"{result['exponent_below']:.3g} to {result['exponent_above']:.3g} (p = {result['p_value']:.3f})")
    return "accelerating", (f"a break at C = {result['break']:.3g} raises the exponent from "
                            f"{result['exponent_below']:.3g} to {result['exponent_above']:.3g} (p = {result['p_value']:.3f})")


def judge_backtest(result, confidence) -> tuple[str, str]:
    if not result.get("available"):
        return "undecided", result.get("reason", "no backtest")
    alpha = 1 - confidence
    err, p = result["mean_log_error"], result["p_value"]
    where = f"{result['n_held_out']} runs above C = {result['cut']:.3g}"
    if p < alpha and err > 0:
        return "diminishing", f"{where} lost {100 * err:.2g}% more than predicted (p = {p:.3f})"
    if p < alpha and err < 0:
        return "accelerating", f"{where} lost {100 * -err:.2g}% less than predicted (p = {p:.3f})"
    return "consistent", f"{where} match the prediction (mean log error {err:+.3g}, p = {p:.3f})"


def decide(pieces: dict[str, tuple[str, str]], compute_decades: float, min_decades: float) -> tuple[str, str]:
    """diminishing / accelerating when at least two pieces say so and none says the opposite; none when the
    backtest and one other piece are consistent and none points either way; inconclusive otherwise."""
    calls = {name: call for name, (call, _) in pieces.items()}
    if compute_decades < min_decades:
        return "inconclusive", f"the runs span {compute_decades:.3f} decades of compute; a verdict needs {min_decades:g}"
    for direction, opposite in (("diminishing", "accelerating"), ("accelerating", "diminishing")):
        agree = [n for n, c in calls.items() if c == direction]
        if len(agree) >= 2 and opposite not in calls.values():
            return direction, f"{' and '.join(agree)} agree"
    pointing = [n for n, c in calls.items() if c in ("diminishing", "accelerating")]
    consistent = [n for n, c in calls.items() if c == "consistent"]
    if not pointing and calls.get("backtest") == "consistent" and len(consistent) >= 2:
        return "none", f"{' and '.join(consistent)} find one power law; nothing points either way"
    if pointing:
        return "inconclusive", (f"only {', '.join(f'{n} ({calls[n]})' for n in pointing)} deviates; "
                                "the other evidence does not confirm it at the stated confidence")
    undecided = [n for n, c in calls.items() if c == "undecided"]
    return "inconclusive", f"{', '.join(undecided)} cannot decide: " + "; ".join(pieces[n][1] for n in undecided)
