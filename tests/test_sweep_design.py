"""Sweep designs: shape rule, IsoFLOP and ladder generators, planner, adaptive edge extension, bad input."""

from __future__ import annotations

import json
import math
import re

import pytest

from scaling_lab import accounting, layout, records
from scaling_lab.model.config import ModelConfig, ShapeError
from scaling_lab.model.sizing import shape_for_params
from scaling_lab.sweep import designs, extend, launch, plan
from scaling_lab.train.run import ConfigError
from support import cli, isolated_env

VOCAB, BLOCK = 257, 128
TINY_RULE = {"aspect_ratio": 32, "head_dim": 4}


def isoflop_cfg(**design):
    spec = {"kind": "isoflop", "budgets": [1e10, 3e10], "sizes_per_budget": 4, "span": 4, "tokens_per_param": 20,
            **TINY_RULE, **design}
    return {"model": {"block_size": BLOCK}, "sweep": {"design": spec}}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("token-cache")
    return isolated_env(cache)


@pytest.mark.parametrize("target", [3e3, 1e4, 5e4, 3e5, 2e6])
def test_shape_rule_gives_a_valid_shape_near_the_target(target):
    shape = shape_for_params(target, VOCAB, BLOCK, **TINY_RULE)
    n = accounting.params_total(shape)
    assert shape.d_model % 4 == 0 and shape.d_model // shape.n_head == 4
    assert abs(math.log(n / target)) < math.log(1.5)
    if target > 3e4:  # once depth can follow the rule, d_model / n_layer stays within 2x of it
        assert 16 <= shape.d_model / shape.n_layer <= 64


def test_shape_rule_recovers_gpt2_small_and_grows_with_the_target():
    gpt2 = shape_for_params(124e6, 50304, 1024)  # default rule: aspect 64, head 64
    assert (gpt2.n_layer, gpt2.d_model, gpt2.n_head) == (12, 768, 12)
    sizes = [accounting.params_total(shape_for_params(t, VOCAB, BLOCK, **TINY_RULE)) for t in range(5000, 400000, 7000)]
    assert sizes == sorted(sizes)


@pytest.mark.parametrize("convention", ["6N", "6N_attention", "chinchilla", "deepseek_M"])
def test_isoflop_runs_of_a_budget_share_its_compute(convention):
    design = designs.from_config(isoflop_cfg(flops_convention=convention), VOCAB)
    runs = design.runs(VOCAB)
    for budget in (1e10, 3e10):
        mine = [r for r in runs if r.budget == budget]
        assert len(mine) >= 3
        sizes = [accounting.params_total(r.shape) for r in mine]
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)
        for r in mine:
            assert r.tokens % BLOCK == 0
            assert accounting.train_flops(r.shape, r.tokens, convention) == pytest.approx(budget, rel=0.01)
        assert sizes[0] < designs.optimal_params(design, budget) < sizes[-1]


def test_isoflop_prior_from_an_earlier_fit_moves_the_sizes():
    chinchilla = designs.from_config(isoflop_cfg(), VOCAB)
    fitted = designs.from_config(isoflop_cfg(n_opt={"coefficient": 1.0, "exponent": 0.45}), VOCAB)
    assert designs.optimal_params(fitted, 1e10) == pytest.approx(1e10**0.45)
    largest = max(accounting.params_total(r.shape) for r in fitted.runs(VOCAB) if r.budget == 1e10)
    assert largest > max(accounting.params_total(r.shape) for r in chinchilla.runs(VOCAB) if r.budget == 1e10)


def test_isoflop_prior_read_from_an_earlier_fit(tmp_path):
    # compute_optimal as the fit writes it: N_opt = G (C/6)^a with C = 6ND (scaling_lab/fit/parametric.py)
    fit_dir = layout.fit_dir(tmp_path)
    fit_dir.mkdir()
    layout.fit_numbers(fit_dir).write_text(json.dumps({"compute_optimal": {"a": 0.5, "G": 0.1, "b": 0.5}}))
    for source in (tmp_path, fit_dir, layout.fit_numbers(fit_dir)):  # results dir, fit dir or the file itself
        design = designs.from_config(isoflop_cfg(n_opt=str(source)), VOCAB)  # 6N: k = 6 exactly
        assert designs.optimal_params(design, 1e10) == pytest.approx(0.1 * (1e10 / 6) ** 0.5)
    under_chinchilla = designs.from_config(isoflop_cfg(n_opt=str(tmp_path), flops_convention="chinchilla"), VOCAB)
    assert designs.optimal_params(under_chinchilla, 1e10) != pytest.approx(0.1 * (1e10 / 6) ** 0.5)


@pytest.mark.parametrize("content, message", [(None, "no fit.json there"), ("{}", "has no compute_optimal"),
                                              ('{"compute_optimal": {"a": 0.5, "G": -1}}', "is not usable")])
def test_isoflop_prior_from_a_missing_or_broken_fit_fails_clearly(tmp_path, content, message):
    if content is not None:
        layout.fit_numbers(tmp_path).write_text(content)
    design = designs.from_config(isoflop_cfg(n_opt=str(tmp_path)), VOCAB)
    with pytest.raises(ConfigError, match=message):
        design.runs(VOCAB)


def test_ladder_is_sizes_times_multiples_of_the_ratio():
    cfg = {"model": {"block_size": BLOCK}, "sweep": {"design": {
        "kind": "ladder", "sizes": [1e4, "tiny-2"], "multiples": [0.5, 1, 4], "tokens_per_param": 20, **TINY_RULE}}}
    runs = designs.from_config(cfg, VOCAB).runs(VOCAB)
    assert len(runs) == 6 and runs[3].shape.name == "tiny-2"
    for r, m in zip(runs, [0.5, 1, 4] * 2):
        assert r.tokens / accounting.params_total(r.shape) == pytest.approx(20 * m, abs=BLOCK / 1e4)


@pytest.mark.parametrize("design, key", [
    ({"budgets": []}, "sweep.design.budgets is empty"),
    ({"budgets": [1e5]}, "sweep.design.budgets: C=1e+05"),  # under one sequence: not even one optimizer step
    ({"sizes_per_budget": 0}, "sweep.design.sizes_per_budget"),
    ({"span": 1}, "sweep.design.span"),
    ({"kind": "diagonal"}, "sweep.design.kind"),
    ({"head_dim": 0}, "head_dim"),
])
def test_bad_designs_name_their_key(design, key):
    with pytest.raises((ConfigError, ShapeError), match=re.escape(key)):
        designs.from_config(isoflop_cfg(**design), VOCAB).runs(VOCAB)


# --- edge extension: the decision on records written here -------------------------------------------------


def test_edge_targets_only_when_the_minimum_is_at_an_edge():
    interior = [(100, 3.0), (200, 2.9), (400, 3.1)]
    assert extend.edge_targets(interior, step=2, count=2) == []
    assert extend.edge_targets([(100, 2.8), (200, 2.9), (400, 3.1)], 2, 2) == [50, 25]
    assert extend.edge_targets([(100, 3.2), (200, 2.9), (400, 2.7)], 2, 1) == [800]
    # an LR sweep gives several losses per size: each size counts with its best
    assert extend.edge_targets([*interior, (100, 3.5), (400, 3.4)], 2, 2) == []
    assert extend.edge_targets([(100, 3.0)], 2, 2) == []


def completed(run_id, params, loss):
    rec = {name: None for name in records.REQUIRED_COMPLETED}
    rec.update(schema_version=1, run_id=run_id, status="completed", model={}, params=params, params_non_embedding=1,
               tokens=1, tokens_requested=1, flops=1.0, flops_convention="6N", flops_by_convention={},
               final_val_loss=loss, val_curve=[], hparams={}, hparams_source={}, data={}, seed=0, wall_time_s=1.0,
               hardware={}, versions={}, started_at="2026-11-23T00:00:00+00:00")
    return rec


def test_extension_adds_runs_past_the_edge_of_the_budget_that_needs_it(tmp_path):
    design = designs.from_config(isoflop_cfg(), VOCAB)
    planned = design.runs(VOCAB)
    entries = [{"run_id": f"r{i}", "budget": r.budget, "params": accounting.params_total(r.shape)}
               for i, r in enumerate(planned)]
    for i, e in enumerate(entries):
        small_first = e["budget"] == 1e10  # budget 1e10: loss rises with N (minimum at the smallest size)
        rank = [x["params"] for x in entries if x["budget"] == e["budget"]].index(e["params"])
        loss = 3.0 + 0.1 * rank if small_first else 3.0 + 0.1 * (rank - 1) ** 2  # 3e10: minimum inside
        records.write_record(layout.record_path(tmp_path, e["run_id"]), completed(e["run_id"], e["params"], loss))

    extra, edges = extend.extension(design, entries, str(tmp_path), count=2)
    assert extra and {r.budget for r in extra} == {1e10} and edges == [1e10]
    smallest = min(e["params"] for e in entries if e["budget"] == 1e10)
    for r in extra:
        assert accounting.params_total(r.shape) < smallest
        assert accounting.train_flops(r.shape, r.tokens) == pytest.approx(1e10, rel=0.01)

    # sizes past the edge that are already in the sweep (here: launched, not finished) are not added twice; the
    # edge is still reported
    for r in extra:
        run_id = f"x{accounting.params_total(r.shape)}"
        entries.append({"run_id": run_id, "budget": r.budget, "params": accounting.params_total(r.shape)})
    assert extend.extension(design, entries, str(tmp_path), count=2) == ([], [1e10])
    # once they finish and the budget's minimum is inside, nothing more is added and no edge is left
    for r in extra:
        run_id = f"x{accounting.params_total(r.shape)}"
        records.write_record(layout.record_path(tmp_path, run_id),
                             completed(run_id, accounting.params_total(r.shape), 3.05))
    assert extend.extension(design, entries, str(tmp_path), count=2) == ([], [])


# --- planner and real runs through the CLI ------------------------------------------------------------------


def test_plan_prints_the_table_and_launches_nothing(tmp_path, env):
    proc = cli("sweep", "sweep=isoflop_local", f"results_dir={tmp_path}", "plan=true", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "8 runs" in proc.stdout and "C = 5.2e+10 FLOPs (6N)" in proc.stdout
    assert "estimated wall time on CPU" in proc.stdout and "8 jobs one after another" in proc.stdout
    assert not list(tmp_path.iterdir())  # no manifest, no runs


def planner_warnings(*overrides) -> list[str]:
    from hydra import initialize_config_dir

    from scaling_lab.conf_dir import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sweep = launch.prepare("main", list(overrides))
    table = plan.rows(sweep.runs, sweep.corpus, sweep.cfg["train"], sweep.cfg["data"]["val_tokens"], "6N")
    return plan.warnings(table, sweep.design)


def test_planner_warns_about_repeats_tiny_runs_and_unbracketed_budgets(tmp_path, env, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", env["SCALING_LAB_CACHE"])
    warnings = planner_warnings("sweep=isoflop_local", "data.max_chars=40000", "data.val_fraction=0.3",
                                "sweep.design.sizes_per_budget=1", "sweep.design.budgets=[1e10]")
    assert any("epochs over the corpus" in w for w in warnings)
    assert any("only 1 distinct sizes" in w for w in warnings)
    assert any("cannot bracket the expected optimum" in w for w in warnings)
    assert not any("optimizer step" in w for w in warnings)
    # one 128-token sequence for a 1M-parameter model: less than the batch the DeepSeek rule asks for
    warnings = planner_warnings("sweep=ladder_local", "sweep.design.sizes=[1e6]", "sweep.design.multiples=[5e-6]")
    assert any("less than one optimizer step" in w for w in warnings)
    assert not any("epochs" in w or "bracket" in w for w in planner_warnings("sweep=isoflop_local"))


@pytest.mark.parametrize("override, key", [
    ("sweep.design.budgets=[1e5]", "sweep.design.budgets"),  # too small for one optimizer step
    ("model.d_model=64", "model.d_model"),  # the design sets shapes
])
def test_bad_input_is_one_line_naming_the_key(tmp_path, env, override, key):
    proc = cli("sweep", "sweep=isoflop_local", f"results_dir={tmp_path}", override, env=env)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and key in proc.stderr
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_isoflop_sweep_runs_match_the_plan_and_extend_only_past_an_edge(tmp_path, env):
    args = ["sweep=isoflop_local", f"results_dir={tmp_path}", "progress=false", "logger=none", "sweep.fit=false",
            # 5 tokens/param centres the sizes (3.9k, 6.4k, 12.6k) so that both edges have a size beyond them
            "sweep.design.budgets=[1e9]", "sweep.design.sizes_per_budget=3", "sweep.design.tokens_per_param=5",
            "sweep.extend_sizes=1",
            "data.val_tokens=4096", "train.eval_points=1"]
    planned = cli("sweep", *args, "plan=true", env=env)
    assert planned.returncode == 0, planned.stderr[-3000:]
    planned_total = float(re.search(r"C = (\S+) FLOPs", planned.stdout).group(1))

    proc = cli("sweep", *args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(layout.sweep_manifest(tmp_path).read_text())["runs"]
    recs = {r["run_id"]: r for r in map(records.read_record, layout.record_paths(tmp_path))}
    assert set(recs) == {e["run_id"] for e in manifest} and all(r["status"] == "completed" for r in recs.values())
    first = manifest[:3]
    assert sum(recs[e["run_id"]]["flops"] for e in first) == pytest.approx(planned_total, rel=1e-3)
    for r in recs.values():
        assert r["flops"] == pytest.approx(1e9, rel=0.01) and r["tokens"] == r["tokens_requested"]

    by_size = sorted((recs[e["run_id"]]["params"], recs[e["run_id"]]["final_val_loss"]) for e in first)
    lowest = min(by_size, key=lambda p: p[1])
    added = manifest[3:]
    if lowest in (by_size[0], by_size[-1]):
        assert len(added) == 1 and "edge extension: 1 runs" in proc.stdout
        beyond = added[0]["params"]
        assert beyond < by_size[0][0] if lowest == by_size[0] else beyond > by_size[-1][0]
    else:
        assert not added and "nothing to add" in proc.stdout

    status = cli("status", f"results_dir={tmp_path}", env=env)
    assert f"{len(manifest)} completed" in status.stdout and "0 pending" in status.stdout


def test_designed_runs_are_ordinary_runs(tmp_path, env, monkeypatch):
    """A design's run has the run id that `scaling-lab train` gives the same shape and tokens."""
    from hydra import compose, initialize_config_dir

    from scaling_lab.conf_dir import CONF_DIR
    from scaling_lab.train.run import RunSpec

    monkeypatch.setenv("SCALING_LAB_CACHE", env["SCALING_LAB_CACHE"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sweep = launch.prepare("main", ["sweep=isoflop_local", f"results_dir={tmp_path}"])
        entry = sweep.runs[0]
        keys = ("n_layer", "d_model", "n_head")
        shape = ModelConfig(vocab_size=VOCAB, block_size=BLOCK, **{k: entry["model"][k] for k in keys})
        plain = compose("main", overrides=["sweep=isoflop_local", f"results_dir={tmp_path}", "model.name=null",
                                           *(f"model.{k}={getattr(shape, k)}" for k in keys),
                                           f"train.tokens={entry['tokens']}"])
    assert RunSpec.from_config(plain).run_id == entry["run_id"]
    assert entry["params"] == accounting.params_total(shape)
