"""run_fit end to end on a results directory of schema-valid run records: files, keys, report, W&B, isolation."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scaling_lab import layout, records
from scaling_lab.fit import FitInputError, run_fit

REPO = Path(__file__).resolve().parent.parent
SIZES = [1e6, 2.2e6, 4.6e6, 1e7, 2.2e7]
TOKENS = [1e7, 2.5e7, 6e7, 1.5e8]


def make_results(tmp_path, seed=0):
    rng = np.random.default_rng(seed)
    for i, n in enumerate(SIZES):
        for j, d in enumerate(TOKENS):
            loss = (1.8 + 400 / n ** 0.34 + 2000 / d ** 0.37) * np.exp(0.003 * rng.normal())
            rec = {
                "run_id": f"run-{i}-{j}", "status": "completed", "sweep": "test",
                "model": {"name": f"s{i}", "n_layer": i + 1},
                "params": int(n), "params_non_embedding": int(0.7 * n), "tokens": int(d), "tokens_requested": int(d),
                "flops": 6.0 * n * d, "flops_convention": "6N",
                # attention and embeddings add most to the smallest models (scaling_lab.accounting)
                "flops_by_convention": {"6N": 6.0 * n * d, "chinchilla": 6.0 * n * d * (1 + 300 / n ** 0.5)},
                "final_val_loss": float(loss), "val_curve": [[int(d), float(loss)]], "hparams": {"lr": 1e-3},
                "hparams_source": {}, "data": {"fingerprint": "f", "tokenizer": "byte"}, "seed": 0,
                "wall_time_s": 1.0, "hardware": {}, "versions": {}, "started_at": "2026-11-23T00:00:00+00:00",
            }
            records.write_record(layout.record_path(tmp_path, rec["run_id"]), rec)
    records.write_record(layout.record_path(tmp_path, "oom"), {"run_id": "oom", "status": "failed", "error": "OOM"})
    return tmp_path


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    results = make_results(tmp_path_factory.mktemp("results"))
    out = layout.fit_dir(results)
    return results, out, run_fit(str(results), out, {"bootstrap": 60})


def test_fit_json_has_every_promised_key(fitted):
    _, out, fit = fitted
    on_disk = json.loads(layout.fit_numbers(out).read_text())
    assert on_disk["n_points"] == fit["n_points"] == 20
    assert on_disk["excluded"] == [{"run": "oom", "reason": "status failed: OOM"}]
    p = on_disk["parametric"]
    assert p["objective"] > 0
    for k in ("E", "A", "B", "alpha", "beta"):
        assert np.isfinite(p[k])
        assert p["se"][k] > 0
        lo, hi = p["ci95"][k]
        assert lo <= p[k] <= hi or k in ("A", "B")  # percentile intervals of skewed A, B need not contain them
    assert abs(p["alpha"] - 0.34) < 0.05 and abs(p["beta"] - 0.37) < 0.05
    co = on_disk["compute_optimal"]
    assert abs(co["a"] + co["b"] - 1) < 1e-12 and len(co["ci95"]["a"]) == 2
    iso = on_disk["isoflop"]
    assert {"a", "b", "ci95", "budgets"} <= set(iso)
    assert iso["a"] is None and "usable compute budgets" in iso["reason"]  # an N x D grid has no IsoFLOP slices
    assert on_disk["diminishing_returns"]["verdict"] in {"none", "diminishing", "accelerating", "inconclusive"}
    for piece in ("local_exponent", "broken_power_law", "backtest"):
        assert on_disk["diminishing_returns"][piece]["why"]


def test_report_answers_first_and_plots_exist(fitted):
    _, out, fit = fitted
    report = layout.fit_report(out).read_text()
    head = report.split("\n## ")[0]
    assert "**Answer.**" in head and "**Diminishing returns:" in head
    assert f"{fit['parametric']['alpha']:.4f}" in head
    assert "| oom | status failed: OOM |" in report
    for name in ("frontier", "fitted_vs_observed", "residuals", "local_exponent", "backtest"):
        assert (layout.fit_plots(out) / f"{name}.png").stat().st_size > 1000
        assert f"(plots/{name}.png)" in report


def test_same_seed_same_numbers(fitted, tmp_path):
    results, _, fit = fitted
    again = run_fit(str(results), tmp_path, {"bootstrap": 60, "plots": False})
    assert again["parametric"]["ci95"] == fit["parametric"]["ci95"]
    assert again["diminishing_returns"]["verdict"] == fit["diminishing_returns"]["verdict"]


def test_allocation_counts_6nd_whatever_convention_the_input_counts(fitted, tmp_path):
    results, _, fit_6n = fitted
    fit_chin = run_fit(str(results), tmp_path, {"bootstrap": 60, "flops_convention": "chinchilla"})
    largest_6nd = 6 * max(SIZES) * max(TOKENS)
    for fit in (fit_6n, fit_chin):
        co = fit["compute_optimal"]
        assert co["target_compute"] == pytest.approx(10 * largest_6nd, rel=1e-6) and co["compute_convention"] == "6ND"
        assert fit["parametric"]["optimal_curve"]["compute"][0] == pytest.approx(6 * min(SIZES) * min(TOKENS), rel=1e-6)
    co_6n, co_chin = fit_6n["compute_optimal"], fit_chin["compute_optimal"]
    for key in ("N_opt", "D_opt", "loss_opt"):
        assert co_chin[key] == pytest.approx(co_6n[key], rel=1e-9)
        assert co_chin["ci95"][key] == pytest.approx(co_6n["ci95"][key], rel=1e-9)
    assert co_6n["input_compute_is_6nd"] and not co_chin["input_compute_is_6nd"]
    lo, hi = co_chin["input_compute_over_6nd"]
    assert (lo, hi) == pytest.approx([1 + 300 / max(SIZES) ** 0.5, 1 + 300 / min(SIZES) ** 0.5], rel=1e-3)
    report = layout.fit_report(tmp_path).read_text()
    assert f"at C = 6ND = {10 * largest_6nd:.3g} FLOPs" in report
    assert f"the input's C (see Input), {lo:.4g} to {hi:.4g} x 6ND" in report
    assert "the input's C equals 6ND on every run" in layout.fit_report(fitted[1]).read_text()


def test_too_few_runs_is_a_clear_error(tmp_path):
    make_results(tmp_path)
    with pytest.raises(FitInputError, match="fewer than the 5 parameters"):
        run_fit(str(tmp_path), tmp_path / "fit", {"where": {"model.name": "s0"}})


@pytest.mark.slow
def test_wandb_offline_run_of_job_type_fit(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    results = make_results(tmp_path / "results")
    wandb_cfg = {"mode": "offline", "project": "scaling-lab", "entity": None, "group": "test",
                 "dir": str(tmp_path / "fit")}
    fit = run_fit(str(results), tmp_path / "fit", {"bootstrap": 20}, wandb_cfg=wandb_cfg)
    assert fit["wandb"] and fit["wandb"]["mode"] == "offline"
    run_dirs = list((tmp_path / "fit" / "wandb").glob("offline-run-*"))
    assert len(run_dirs) == 1
    logged = b"".join(p.read_bytes() for p in run_dirs[0].glob("*.wandb"))
    assert b"fit" in logged and b"parametric/alpha" in logged
    assert json.loads(layout.fit_numbers(tmp_path / "fit").read_text())["wandb"]["id"] == fit["wandb"]["id"]


def test_fit_never_imports_training_code(tmp_path):
    make_results(tmp_path)
    code = (
        "import sys; from scaling_lab.fit import run_fit; "
        f"run_fit({str(tmp_path)!r}, {str(tmp_path / 'fit')!r}, {{'bootstrap': 10}}); "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'lightning') "
        "or m.startswith(('scaling_lab.train', 'scaling_lab.data', 'scaling_lab.model', 'scaling_lab.sweep'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=300)


def test_importing_the_fit_loads_no_model_code():
    code = "import scaling_lab.fit, sys; assert not any(m.startswith('scaling_lab.model') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


@pytest.mark.parametrize("override, names", [
    ("fit.flops_convention=6ND", "fit.flops_convention='6ND'"),
    ("fit.params_field=params_embedding", "fit.params_field='params_embedding'"),
    ("+fit.where.modle.name=s0", "fit.where names field 'modle.name'"),
    ("fit.confidence=1.5", "fit.confidence must be a number in (0, 1), got 1.5"),
    ("fit.confidence=0", "fit.confidence must be a number in (0, 1), got 0"),
    ("fit.bootstrap=0", "fit.bootstrap must be an integer >= 1, got 0"),
    ("fit.bootstrap_seeds=2.5", "fit.bootstrap_seeds must be an integer >= 1, got 2.5"),
    ("fit.bootstrap_check=-1", "fit.bootstrap_check must be an integer >= 0, got -1"),
    ("fit.huber_delta=-1e-3", "fit.huber_delta must be a number in (0, inf), got -0.001"),
    ("fit.backtest.cut=0", "fit.backtest.cut must be a number in (0, inf) or null, got 0"),
    ("fit.isoflop.window=2", "fit.isoflop.window must be an integer >= 3, got 2"),
    ("fit.isoflop.window=4", "fit.isoflop.window must be odd (the lowest-loss size and as many on each side), got 4"),
])
def test_unusable_fit_settings_are_one_line_before_any_fitting(tmp_path, capsys, override, names):
    from scaling_lab.cli import main

    results = make_results(tmp_path / "results")
    assert main(["fit", f"input={results}", f"output_dir={tmp_path / 'out'}", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("scaling-lab fit: error: ") and names in err
    assert not layout.fit_numbers(tmp_path / "out").exists()


def test_where_from_the_command_line_selects_records_by_dotted_field(tmp_path, capsys):
    from scaling_lab.cli import main

    results = make_results(tmp_path / "results")
    # Hydra nests +fit.where.model.name=s1; the four runs of size s1 are selected, too few to fit
    assert main(["fit", f"input={results}", f"output_dir={tmp_path / 'out'}", "+fit.where.model.name=s1"]) == 2
    assert "4 usable runs, fewer than the 5 parameters" in capsys.readouterr().err


def test_backtest_uses_the_configured_bootstrap_seeds_and_check(tmp_path, monkeypatch):
    from scaling_lab.fit import verdict

    seen = []

    def spy(name, real):
        def wrapped(*args, **kwargs):
            seen.append((name, kwargs.get("n_seeds", kwargs.get("check"))))
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(verdict, "fit_grid", spy("fit_grid", verdict.fit_grid))
    monkeypatch.setattr(verdict, "bootstrap_fit", spy("bootstrap_fit", verdict.bootstrap_fit))
    fit = run_fit(str(make_results(tmp_path)), tmp_path / "fit",
                  {"bootstrap": 20, "bootstrap_seeds": 3, "bootstrap_check": 7, "plots": False})
    assert fit["diminishing_returns"]["backtest"]["available"]
    assert seen == [("fit_grid", 3), ("bootstrap_fit", 7)]
