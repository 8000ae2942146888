"""Synthetic sweeps from known laws: recovery, interval coverage, and the diminishing-returns verdict.

The generator lays out an IsoFLOP design: at each budget, 7 sizes from 0.18x to 5.6x the true compute-optimal
N of L = E + A/N^alpha + B/D^beta, with D = C / (6 N) and multiplicative log-normal noise. ``decay`` =
(C_b, delta) multiplies the reducible loss by (1 + C / C_b)^delta: above C_b its exponent along the frontier
falls by delta, i.e. returns diminish beyond what the law fitted below predicts.
"""

import csv

import numpy as np
import pytest

from scaling_lab.fit import run_fit
from scaling_lab.fit.parametric import allocation, bootstrap_fit, fit_grid, named
from scaling_lab.fit.stats import interval, resample_weights

TRUTH = {"E": 1.8, "A": 400.0, "B": 2000.0, "alpha": 0.34, "beta": 0.37}


def make_sweep(seed, *, noise=0.003, decay=None, budgets=np.logspace(17, 21, 9), sizes=7):
    rng = np.random.default_rng(seed)
    E, A, B, alpha, beta = (TRUTH[k] for k in ("E", "A", "B", "alpha", "beta"))
    a = beta / (alpha + beta)
    g = (alpha * A / (beta * B)) ** (1 / (alpha + beta))
    rows = []
    for c in budgets:
        for n in g * (c / 6) ** a * np.logspace(-0.75, 0.75, sizes):
            d = c / (6 * n)
            reducible = A / n ** alpha + B / d ** beta
            if decay:
                reducible *= (1 + c / decay[0]) ** decay[1]
            rows.append((n, d, c, (E + reducible) * np.exp(noise * rng.normal())))
    return np.array(rows)


def write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["params", "tokens", "flops", "loss"])
        writer.writerows(rows)
    return path


def test_parameters_recovered():
    n, d, _, loss = make_sweep(3).T
    grid = fit_grid(np.log(n), np.log(d), np.log(loss))
    p = named(grid.theta)
    assert abs(p["alpha"] - 0.34) < 0.01 and abs(p["beta"] - 0.37) < 0.01
    assert abs(p["E"] - 1.8) < 0.02
    assert abs(float(allocation(grid.theta, 1e21)["a"]) - 0.37 / 0.71) < 0.01


@pytest.mark.slow
def test_intervals_cover_the_truth_at_about_the_nominal_rate():
    truth = {**TRUTH, "a": TRUTH["beta"] / (TRUTH["alpha"] + TRUTH["beta"])}
    hits, widths = {k: 0 for k in truth}, []
    seeds = range(100, 112)
    for seed in seeds:
        n, d, _, loss = make_sweep(seed, noise=0.01).T
        logs = np.log(n), np.log(d), np.log(loss)
        grid = fit_grid(*logs)
        thetas = bootstrap_fit(*logs, grid, resample_weights(np.random.default_rng(seed), len(loss), 200)).thetas
        samples = {**named(thetas), "a": allocation(thetas, 1e21)["a"]}
        for k, value in truth.items():
            lo, hi = interval(samples[k], 0.95)
            hits[k] += lo <= value <= hi
            if k == "alpha":
                widths.append(hi - lo)
    coverage = sum(hits.values()) / (len(hits) * len(seeds))
    assert 0.85 <= coverage <= 1.0, hits
    assert min(hits.values()) >= 9, hits
    assert np.median(widths) < 0.06  # informative intervals, not trivially wide ones


@pytest.mark.slow
@pytest.mark.parametrize("seed, decay, expected", [(1, None, "none"), (2, None, "none"), (0, (1e20, 0.15), "diminishing"),
                                                   (1, (1e20, 0.15), "diminishing")])
def test_verdict(tmp_path, seed, decay, expected):
    path = write_csv(tmp_path / "sweep.csv", make_sweep(seed, decay=decay))
    fit = run_fit(path, tmp_path / "fit", {"bootstrap": 200, "plots": False})
    dr = fit["diminishing_returns"]
    assert dr["verdict"] == expected, dr["reason"]
    if expected == "diminishing":
        assert dr["backtest"]["mean_log_error"] > 0
        assert dr["local_exponent"]["change_ci"][1] < 0
    else:
        assert dr["backtest"]["call"] == "consistent"
