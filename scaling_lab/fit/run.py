"""run_fit: one table of runs in, fit.json + report.md + plots/ out (and a W&B run of job_type fit)."""

from __future__ import annotations

import math
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from scaling_lab import checks, layout
from scaling_lab.accounting import CONVENTIONS, compute_from_tokens
from scaling_lab.conf_dir import CONF_DIR
from scaling_lab.fit import envelope, isoflop, parametric, single_axis, verdict
from scaling_lab.fit.stats import interval, resample_weights, summarize
from scaling_lab.fit.table import FitInputError, load_table
from scaling_lab.records import write_atomic

DEFAULTS_PATH = CONF_DIR / "fit" / "default.yaml"
PARAMS_FIELDS = ("params", "params_non_embedding")  # the record fields that count N (scaling_lab.records)
# the level of every estimate's bootstrap interval (fit.json's ci95); fit.confidence is the verdict's own level
INTERVAL = 0.95

# numeric settings: the smallest allowed integer of each count, the interval of each other number; _NULLABLE are
# those whose null means something (conf/fit/default.yaml)
_COUNTS = {"bootstrap": 1, "bootstrap_seeds": 1, "bootstrap_check": 0, "exclude_top_loss": 0, "seed": 0,
           "isoflop.window": 3}  # a parabola needs 3 sizes
_INTERVALS = {"confidence": "(0, 1)", "huber_delta": "(0, inf)", "target_compute": "(0, inf)",
              "isoflop.bucket_decades": "[0, inf)", "backtest.cut": "(0, inf)", "backtest.cut_quantile": "[0, 1]",
              "verdict.material_change": "(0, inf)", "verdict.min_decades": "[0, inf)",
              "verdict.break_sharpness": "(0, inf)", "verdict.bandwidth_decades": "(0, inf)"}
_NULLABLE = {"target_compute", "backtest.cut", "verdict.bandwidth_decades"}


def settings(cfg: dict | None) -> dict:
    """conf/fit/default.yaml with cfg merged over it, so a partial cfg (tests, scripts) gets every knob; checked."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.load(DEFAULTS_PATH), OmegaConf.create(cfg or {}))
    merged = OmegaConf.to_container(merged, resolve=True)
    check_settings(merged)
    return merged


def check_settings(cfg: dict) -> None:
    """FitInputError naming the first unusable fit.* setting, before any input is read: a typo would otherwise
    fall back silently (flops_convention, params_field) or surface late as a numpy error deep in a bootstrap."""
    def get(tree, dotted):
        for part in dotted.split("."):
            tree = tree[part]
        return tree

    def fail(key, wanted):
        raise FitInputError(f"fit.{key}={get(cfg, key)!r} is not {wanted}")

    if cfg["flops_convention"] is not None and cfg["flops_convention"] not in CONVENTIONS:
        fail("flops_convention", f"null or one of {', '.join(CONVENTIONS)}")
    if cfg["params_field"] not in PARAMS_FIELDS:
        fail("params_field", f"one of {', '.join(PARAMS_FIELDS)}")
    for key in ("where", "columns"):  # null reads as empty (table.py)
        if cfg[key] is not None and not isinstance(cfg[key], dict):
            fail(key, f"a mapping (+fit.{key}.NAME=VALUE)")
    for key, least in _COUNTS.items():
        checks.count(f"fit.{key}", get(cfg, key), least, error=FitInputError)
    if get(cfg, "isoflop.window") % 2 == 0:  # an even window cannot be centred on the lowest-loss size
        raise FitInputError(f"fit.isoflop.window must be odd (the lowest-loss size and as many on each side), "
                            f"got {get(cfg, 'isoflop.window')}")
    for key, interval in _INTERVALS.items():
        besides = (None,) if key in _NULLABLE else ()
        checks.number(f"fit.{key}", get(cfg, key), interval, besides=besides, error=FitInputError)


def run_fit(input: str | Path, output_dir: str | Path, cfg: dict | None = None, wandb_cfg: dict | None = None,
            *, wandb_api=None) -> dict:
    cfg = settings(cfg)
    started = time.perf_counter()
    table = load_table(input, cfg, wandb_api=wandb_api)
    # bootstrap resamples and grid starts wander through extreme thetas whose predictions overflow; those come
    # back as NaN, are dropped as gaps (reported) and would otherwise only print numpy warnings
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="All-NaN slice", category=RuntimeWarning)
        fit = fit_table(table, cfg)
    fit["timing_s"]["total"] = round(time.perf_counter() - started, 3)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(layout.fit_numbers(output_dir), fit)
    from scaling_lab.fit import plots, report

    images = plots.draw_all(table, fit, layout.fit_plots(output_dir)) if cfg["plots"] else {}
    layout.fit_report(output_dir).write_text(report.render(fit, images, output_dir))
    if wandb_cfg and wandb_cfg.get("mode", "disabled") != "disabled":
        from scaling_lab.fit import wandb_log

        fit["wandb"] = wandb_log.log_fit(fit, table, images, wandb_cfg)
        write_atomic(layout.fit_numbers(output_dir), fit)
    return fit


def fit_table(table, cfg: dict) -> dict:
    """Every method on one table; numbers only (no files)."""
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(cfg["seed"])).spawn(4)]
    rng_resample, rng_check, rng_break, rng_backtest = streams
    n_boot, delta = int(cfg["bootstrap"]), float(cfg["huber_delta"])
    N, D, C, L = table.params, table.tokens, table.flops, table.loss
    log_n, log_d, log_l = np.log(N), np.log(D), np.log(L)
    weights = resample_weights(rng_resample, len(L), n_boot)
    timing = {}

    t0 = time.perf_counter()
    grid = parametric.fit_grid(log_n, log_d, log_l, delta=delta, n_seeds=int(cfg["bootstrap_seeds"]))
    timing["grid"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    boot = parametric.bootstrap_fit(log_n, log_d, log_l, grid, weights, delta=delta, check=int(cfg["bootstrap_check"]),
                                    rng=rng_check)
    timing["bootstrap"] = time.perf_counter() - t0
    point, samples = parametric.named(grid.theta), parametric.named(boot.thetas)
    se, ci = summarize(samples, INTERVAL)
    # the allocation counts C = 6 N D (Hoffmann et al. 2022, Eq. 4), whatever convention the input's C is in
    compute_6nd = compute_from_tokens(N, D)
    target = float(cfg["target_compute"] or 10 * compute_6nd.max())
    alloc, alloc_samples = parametric.allocation(grid.theta, target), parametric.allocation(boot.thetas, target)
    alloc_se, alloc_ci = summarize(alloc_samples, INTERVAL)
    residuals = log_l - np.log(parametric.predict(grid.theta, N, D))
    curve_c = np.logspace(np.log10(compute_6nd.min()), np.log10(target), 40)
    curve_boot = parametric.allocation(boot.thetas[:, None, :], curve_c)["loss_opt"]
    curve = {"compute": curve_c, "loss": parametric.allocation(grid.theta, curve_c)["loss_opt"],
             "lo": np.nanpercentile(curve_boot, 50 * (1 - INTERVAL), axis=0),
             "hi": np.nanpercentile(curve_boot, 50 * (1 + INTERVAL), axis=0)}

    labels = isoflop.buckets(C, float(cfg["isoflop"]["bucket_decades"]))
    window = int(cfg["isoflop"]["window"])
    iso = isoflop.fit_isoflop(N, D, C, L, labels, window=window)
    iso_samples = [isoflop.fit_isoflop(N, D, C, L, labels, window=window, weight=w) for w in weights] if iso["a"] is not None else []
    iso_boot = {k: np.array([s[k] if s[k] is not None else np.nan for s in iso_samples]) for k in ("a", "b")}
    iso_se, iso_ci = summarize(iso_boot, INTERVAL) if iso_samples else ({}, {})

    env = envelope.fit_envelope(N, D, C, L)
    env_samples = [envelope.fit_envelope(N, D, C, L, weight=w) for w in weights]
    env_boot = {k: np.array([s[k] if s[k] is not None else np.nan for s in env_samples]) for k in ("a", "b")}
    env_se, env_ci = summarize(env_boot, INTERVAL)

    front = np.array(env["runs"], dtype=int)
    axes = {"L(N)": _lowest_by(N, L), "L(D)": _lowest_by(D, L), "L(C)": (C[front], L[front])}
    laws = {name: single_axis.fit_saturating(x, y) for name, (x, y) in axes.items()}

    t0 = time.perf_counter()
    evidence = _diminishing_returns(table, cfg, point["E"], samples["E"], weights, front, rng_break, rng_backtest)
    timing["verdict"] = time.perf_counter() - t0

    alloc_out = {k: float(v) for k, v in alloc.items()}
    fit = {
        "input": table.source,
        "n_points": len(table),
        "excluded": table.excluded,
        "notes": table.notes,
        "settings": cfg,
        "parametric": {
            **{k: float(v) for k, v in point.items()},
            "objective": grid.objective, "huber_delta": delta, "starts": grid.n_starts,
            "starts_at_optimum": grid.n_at_optimum,
            "se": se, "ci95": ci,
            "bootstrap": {"resamples": n_boot, "seed": int(cfg["seed"]), "checked": boot.checked,
                          "check_starts": len(grid.seeds), "disagreements": boot.disagreements,
                          "refit_all_from_grid_starts": boot.refit_all},
            "residual_rms": float(np.sqrt(np.mean(residuals ** 2))),
            "optimal_curve": curve,
        },
        "compute_optimal": {
            "a": alloc_out["a"], "b": alloc_out["b"], "G": alloc_out["G"], "target_compute": target,
            "N_opt": alloc_out["N_opt"], "D_opt": alloc_out["D_opt"],
            "tokens_per_param": alloc_out["tokens_per_param"], "loss_opt": alloc_out["loss_opt"],
            "se": alloc_se, "ci95": alloc_ci, "compute_convention": "6ND",
            # IsoFLOP, envelope and verdict use the input's C: whether and how far it is from the allocation's
            "input_compute_is_6nd": bool(np.allclose(C, compute_6nd, rtol=1e-6, atol=0)),
            "input_compute_over_6nd": [float(np.min(C / compute_6nd)), float(np.max(C / compute_6nd))],
        },
        "isoflop": {"a": iso["a"], "b": iso["b"], "se": iso_se, "ci95": iso_ci, "window": window,
                    "bucket_decades": float(cfg["isoflop"]["bucket_decades"]),
                    "n_budgets_used": iso["n_budgets_used"], "budgets": iso["budgets"],
                    "reason": None if iso["a"] is not None else
                    f"{iso['n_budgets_used']} usable compute budgets (needs 2 with 3+ sizes and an interior minimum)"},
        "envelope": {"a": env["a"], "b": env["b"], "se": env_se, "ci95": env_ci,
                     "frontier": [_run(table, i) for i in front]},
        "single_axis": laws,
        "diminishing_returns": evidence,
    }
    fit["timing_s"] = {k: round(v, 3) for k, v in timing.items()}
    return _finite(fit)


def _diminishing_returns(table, cfg, floor_all, floor_all_samples, weights, front, rng_break, rng_backtest) -> dict:
    vcfg, bcfg, confidence = cfg["verdict"], cfg["backtest"], float(cfg["confidence"])
    C, L = table.flops, table.loss
    cut = float(bcfg["cut"]) if bcfg["cut"] else float(np.quantile(C, float(bcfg["cut_quantile"])))
    back, floor_samples = verdict.backtest(table.params, table.tokens, C, L, cut, delta=float(cfg["huber_delta"]),
                                           resamples=len(weights), n_seeds=int(cfg["bootstrap_seeds"]),
                                           check=int(cfg["bootstrap_check"]), rng=rng_backtest, confidence=confidence)
    if back["available"]:
        floor, floor_from = back["E"], f"Approach 3 fitted on the runs with C <= {cut:.3g}"
    else:
        floor, floor_samples, floor_from = floor_all, floor_all_samples, "Approach 3 fitted on all runs (no backtest)"
    span = float(np.ptp(np.log10(C[front]))) if front.size else 0.0
    centers = np.linspace(np.log10(C[front]).min(), np.log10(C[front]).max(), 12) if front.size else np.array([])
    bandwidth = float(vcfg["bandwidth_decades"] or max(span / 4, 0.1))
    local = verdict.local_exponents(C, L, floor, centers, bandwidth)
    local_boot = np.array([verdict.local_exponents(C, L, e, centers, bandwidth, weight=w)
                           for e, w in zip(floor_samples, weights)])
    lower, upper, change = verdict.exponent_change(C, L, floor)
    change_boot = np.array([verdict.exponent_change(C, L, e, weight=w)[2] for e, w in zip(floor_samples, weights)])
    change_ci = interval(change_boot, confidence) if np.isfinite(change) else None
    tail = 50 * (1 - confidence)
    with np.errstate(all="ignore"):
        band = (np.nanpercentile(local_boot, [tail, 100 - tail], axis=0) if np.isfinite(local_boot).any()
                else np.full((2, len(centers)), np.nan))
    broken = single_axis.compare_broken(C[front], L[front], floor, resamples=len(weights), rng=rng_break,
                                        sharpness=float(vcfg["break_sharpness"])) if front.size >= 6 else None
    material = float(vcfg["material_change"])
    pieces = {"local_exponent": verdict.judge_exponent(change_ci, lower, confidence, material),
              "broken_power_law": verdict.judge_break(broken, confidence),
              "backtest": verdict.judge_backtest(back, confidence)}
    decades = float(np.log10(C.max() / C.min()))
    call, why = verdict.decide(pieces, decades, float(vcfg["min_decades"]))
    return {
        "verdict": call, "reason": why, "confidence": confidence, "floor_E": floor, "floor_from": floor_from,
        "compute_decades": decades,
        "local_exponent": {"call": pieces["local_exponent"][0], "why": pieces["local_exponent"][1],
                           "log10_compute": centers.tolist(), "exponent": local.tolist(),
                           "band_lo": band[0].tolist(), "band_hi": band[1].tolist(), "bandwidth_decades": bandwidth,
                           "lower_half": lower, "upper_half": upper, "change": change, "change_ci": change_ci},
        "broken_power_law": {"call": pieces["broken_power_law"][0], "why": pieces["broken_power_law"][1],
                             **(broken or {})},
        "backtest": {"call": pieces["backtest"][0], "why": pieces["backtest"][1], **back},
    }


def _lowest_by(x, loss):
    """For each distinct x, the lowest loss: L(N) at the best data budget tried, L(D) at the best size."""
    values = np.unique(x)
    return values, np.array([loss[x == v].min() for v in values])


def _run(table, i) -> dict:
    return {"run": table.run_ids[i], "compute": float(table.flops[i]), "N": float(table.params[i]),
            "D": float(table.tokens[i]), "loss": float(table.loss[i])}


def _finite(value: Any) -> Any:
    """JSON-ready: numpy to Python, NaN and inf to None (JSON has no NaN)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, np.ndarray):
        return _finite(value.tolist())
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value
