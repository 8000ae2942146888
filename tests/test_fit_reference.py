"""The fit against published results: Epoch AI's Chinchilla refit and Porian et al. 2024's IsoFLOP exponents."""

import csv
from pathlib import Path

import numpy as np
import pytest

from scaling_lab.fit.isoflop import buckets, fit_isoflop
from scaling_lab.fit.parametric import allocation, bootstrap_fit, fit_grid, named
from scaling_lab.fit.stats import interval, resample_weights
from scaling_lab.fit.table import load_table

DATA = Path(__file__).parent / "data"
CHINCHILLA = DATA / "chinchilla_epoch_svg_extracted_data.csv"
CHINCHILLA_CFG = {"columns": {"params": "Model Size", "flops": "Training FLOP"}, "exclude_top_loss": 5}
PORIAN = DATA / "porian2024_isoflop_points.csv"
PORIAN_CFG = {"columns": {"params": "N", "tokens": "T_tokens", "flops": "flops_budget"}}


@pytest.fixture(scope="module")
def chinchilla():
    table = load_table(CHINCHILLA, CHINCHILLA_CFG)
    logs = np.log(table.params), np.log(table.tokens), np.log(table.loss)
    return table, logs, fit_grid(*logs)


def test_chinchilla_table_is_epochs_240_points(chinchilla):
    table, _, _ = chinchilla
    assert len(table) == 240
    assert len(table.excluded) == 5 and all("highest losses" in e["reason"] for e in table.excluded)
    assert min(e for e in table.loss) < 2.1 and table.loss.max() < 5.0  # the 5 dropped are the worst
    assert any("D = C / (6 N)" in n for n in table.notes)
    np.testing.assert_allclose(table.tokens * 6 * table.params, table.flops, rtol=1e-12)


def test_grid_fit_lands_on_epochs_optimum(chinchilla):
    _, _, grid = chinchilla
    p = {k: float(v) for k, v in named(grid.theta).items()}
    assert round(p["alpha"], 3) == 0.347 and abs(p["alpha"] - 0.34731) < 2e-5
    assert round(p["beta"], 3) == 0.367 and abs(p["beta"] - 0.36718) < 2e-5
    assert round(p["E"], 3) == 1.817 and abs(p["E"] - 1.8172) < 1e-4
    assert abs(p["A"] - 477.84) < 2  # the surface is flat in B: compare it loosely
    assert 2100 < p["B"] < 2200
    assert abs(grid.objective - 0.0010183) < 1e-7
    assert grid.n_starts == 4500 and 100 < grid.n_at_optimum < 4500


@pytest.mark.slow
def test_bootstrap_intervals_agree_with_epochs(chinchilla):
    _, logs, grid = chinchilla
    weights = resample_weights(np.random.default_rng(0), len(logs[0]), 1000)
    boot = bootstrap_fit(*logs, grid, weights, rng=np.random.default_rng(1))
    assert boot.disagreements == 0
    s = named(boot.thetas)
    lo, hi = interval(s["alpha"], 0.95)
    assert abs(lo - 0.317) < 0.003 and abs(hi - 0.373) < 0.003
    lo, hi = interval(s["beta"], 0.95)
    assert abs(lo - 0.331) < 0.004 and abs(hi - 0.415) < 0.004
    lo, hi = interval(s["E"], 0.95)
    assert abs(lo - 1.769) < 0.005 and abs(hi - 1.871) < 0.005
    assert abs(np.std(s["alpha"]) - 0.0154) < 0.0015 and abs(np.std(s["beta"]) - 0.0206) < 0.002
    a = allocation(boot.thetas, 1e24)["a"]
    assert abs(float(allocation(grid.theta, 1e24)["a"]) - 0.513) < 0.002
    assert abs(np.std(a) - 0.020) < 0.003


def _published():
    with open(DATA / "porian2024_exponents.csv", newline="") as f:
        return {(r["config_label"], r["dataset"]): float(r["a_exponent_Nstar_vs_C"]) for r in csv.DictReader(f)}


@pytest.mark.parametrize("config", ["Optimizer tuning (no decay)", "Reproducing Kaplan et al."])
def test_isoflop_exponent_matches_porian_on_refinedweb(config):
    table = load_table(PORIAN, {**PORIAN_CFG, "where": {"config_label": config, "dataset": "rw"}})
    labels = buckets(table.flops, 0.05)
    assert len(np.unique(labels)) == len(np.unique(table.flops))  # one bucket per published budget
    fit = fit_isoflop(table.params, table.tokens, table.flops, table.loss, labels, window=7)
    assert fit["n_budgets_used"] >= 10
    assert abs(fit["a"] - _published()[(config, "rw")]) < 0.03
    assert abs(fit["a"] + fit["b"] - 1) < 0.01  # C = 6 N D on every row
