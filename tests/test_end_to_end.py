"""The whole pipeline through the real CLI: Hydra multirun -> Lightning -> records + W&B offline -> fit -> report."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from scaling_lab import layout, records
from support import ONE_THREAD, cli, isolated_env

SECRET = "wandb-key-that-must-never-be-written-0123456789"


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("token-cache")
    return isolated_env(cache, WANDB_API_KEY=SECRET, **ONE_THREAD)


@pytest.fixture(scope="session")
def smoke(tmp_path_factory, env):
    results = tmp_path_factory.mktemp("smoke")
    proc = cli("sweep", "sweep=smoke", f"results_dir={results}", "progress=false", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return results, proc


def load_records(results):
    return [records.read_record(p) for p in layout.record_paths(results)]


@pytest.mark.slow
def test_smoke_sweep_leaves_complete_records(smoke):
    results, proc = smoke
    recs = load_records(results)
    assert len(recs) == 6 and all(r["status"] == "completed" for r in recs)
    assert {r["model"]["name"] for r in recs} == {"tiny-1", "tiny-2", "tiny-3"}
    assert {r["tokens_requested"] for r in recs} == {8192, 16384}
    for r in recs:
        records.validate(r)
        assert r["tokens"] % r["model"]["block_size"] == 0 and abs(r["tokens"] - r["tokens_requested"]) < 128
        assert r["flops"] == pytest.approx(6 * r["params"] * r["tokens"])
        assert r["val_curve"][-1] == [r["tokens"], r["final_val_loss"]]
        assert 0 < r["final_val_loss"] < math.log(r["model"]["vocab_size"])  # learned something
        assert r["data"]["fingerprint"] and r["data"]["tokenizer"] == "byte" and r["data"]["epochs"] > 0
        assert {"lr", "batch_size", "warmup_steps", "total_steps"} <= set(r["hparams"])
        assert "DeepSeek" in r["hparams_source"]["lr"]
        assert r["sweep"] == "smoke" and r["wandb"]["group"] == "smoke"
        assert r["hardware"]["accelerator"] == "cpu" and r["versions"]["torch"] and r["git_commit"]
    manifest = json.loads(layout.sweep_manifest(results).read_text())
    assert sorted(m["run_id"] for m in manifest["runs"]) == sorted(r["run_id"] for r in recs)


@pytest.mark.slow
def test_sweep_ends_with_a_fit_and_report(smoke):
    results, proc = smoke
    fit = json.loads((layout.fit_dir(results) / "fit.json").read_text())
    assert fit["n_points"] == 6
    for key in ("E", "A", "B", "alpha", "beta"):
        assert math.isfinite(fit["parametric"][key])
    assert layout.fit_report(layout.fit_dir(results)).read_text().strip()
    assert list(layout.fit_plots(layout.fit_dir(results)).glob("*.png"))
    assert f"report: {layout.fit_report(layout.fit_dir(results))}" in proc.stdout


@pytest.mark.slow
def test_wandb_offline_runs_read_back_with_wandbs_own_reader(smoke, env):
    results, _ = smoke
    for rec in load_records(results):
        run_dir = next((layout.run_dir(results, rec["run_id"]) / "wandb").glob("offline-run-*"))
        out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "wandb"), "leet", "inspect",
                              "--summary", "--json", str(run_dir)], capture_output=True, text=True, env=env)
        summary = json.loads(out.stdout)
        assert summary["state"] == "finished"
        assert summary["summary"]["val/loss"] == pytest.approx(rec["final_val_loss"], rel=1e-6)
        assert summary["summary"]["compute/val_loss"] == summary["summary"]["val/loss"]
        assert summary["summary"]["tokens"] == rec["tokens"]
        assert summary["summary"]["flops"] == pytest.approx(rec["tokens"] * 6 * rec["params"])
    # the x-axes: every record of the last run's transaction log, define_metric ones included
    out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "wandb"), "leet", "inspect", "--json",
                          str(run_dir)], capture_output=True, text=True, env=env)
    logged = [json.loads(line) for line in out.stdout.splitlines()]
    axes = {m["metric"].get("glob_name") or m["metric"]["name"]: m["metric"].get("step_metric")
            for m in logged if m.get("type") == "metric"}
    assert axes["train/*"] == axes["val/*"] == "tokens" and axes["compute/*"] == "flops"
    # the corpus fingerprint, by which a fit reading runs from W&B refuses a mix of datasets
    config = next(m["run"]["config"]["update"] for m in logged if m.get("type") == "run")
    assert config["data"]["fingerprint"] == rec["data"]["fingerprint"] and config["run_id"] == rec["run_id"]


@pytest.mark.slow
def test_no_secret_is_written_anywhere(smoke):
    results, _ = smoke
    for path in results.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


@pytest.mark.slow
def test_relaunch_trains_nothing_new(smoke, env):
    results, _ = smoke
    before = {p: p.stat().st_mtime_ns for p in layout.record_paths(results)}
    proc = cli("sweep", "sweep=smoke", f"results_dir={results}", "progress=false", "sweep.fit=false", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in layout.record_paths(results)} == before
    assert (proc.stdout + proc.stderr).count("already completed") == 6


@pytest.mark.slow
def test_status_lists_every_run(smoke, env):
    results, _ = smoke
    proc = cli("status", f"results_dir={results}", env=env)
    assert proc.returncode == 0
    assert "6 completed, 0 running, 0 failed, 0 diverged, 0 pending" in proc.stdout


@pytest.mark.slow
def test_training_is_deterministic_given_the_seed(tmp_path, env):
    def final_loss(where, seed):
        proc = cli("train", "model.name=tiny-1", "train.tokens=4096", f"seed={seed}", f"results_dir={where}",
                   "logger=none", "progress=false", "data.val_tokens=2048", "train.eval_points=1", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (rec,) = load_records(where)
        return rec["final_val_loss"]

    first = final_loss(tmp_path / "a", 0)
    assert final_loss(tmp_path / "b", 0) == first
    assert final_loss(tmp_path / "c", 1) != first


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_model=65", "model.d_model=65 is not divisible by model.n_head=4"),
        ("model.name=tiny-99", "model.name='tiny-99' is not a known shape"),
        ("train.tokens=0", "train.tokens must be a number in (0, inf)"),
        ("train.tokens=-5", "train.tokens must be a number in (0, inf)"),
        ("train.tokens=100", "less than one sequence"),
        ("sweep=nope", "sweep"),
        ("accelerator=tpu", "accelerator='tpu' is not one of"),
        ("train.lr_rule=bogus", "train.lr_rule must be one of"),
        ("logger.mode=bogus", "logger.mode='bogus' is not one of"),
        ("train.eval_points=0", "train.eval_points must be an integer >= 1"),
        ("train.log_every=0", "train.log_every must be an integer >= 1"),
        ("train.precision=bf17", "train.precision='bf17' is not one of"),
        ("train.warmup_frac=-1", "train.warmup_frac must be a number in [0, 1)"),
        ("train.beta2=2", "train.beta2 must be a number in [0, 1)"),
        ("train.eps=0", "train.eps must be a number in (0, inf)"),
        ("train.lr=0", "train.lr must be a number in (0, inf) or null"),
        ("train.batch_size=2.5", "train.batch_size must be an integer >= 1"),
        ("data.val_tokens=0", "data.val_tokens must be an integer >= 128"),
        ("data.cache_dir=/proc/no/cache", "data.cache_dir='/proc/no/cache' cannot be created"),
    ],
)
def test_bad_config_fails_before_training_with_one_line(tmp_path, capsys, override, message):
    # in-process: the config checks run before Hydra's app starts, so nothing global is left behind
    from scaling_lab.cli import main

    assert main(["train", override, f"results_dir={tmp_path / 'r'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("command, schedule, warmup_tokens, message", [
    # 40 steps of 4 x 128 tokens; wsd cools down over the last 8: 35 warmup steps reach into the cooldown
    (["train", "train.tokens=20480"], "wsd", 18000, "35 warmup steps, past the cooldown of its 40 steps"),
    (["train", "train.tokens=20480"], "cosine", 30000, "59 warmup steps, past the end of its 40 steps"),
    (["sweep", "sweep=smoke", "train.tokens=40960,20480"], "wsd", 18000, "past the cooldown of its 40 steps"),
])
def test_a_warmup_past_the_decay_fails_in_one_line_before_any_record(tmp_path, capsys, command, schedule,
                                                                      warmup_tokens, message):
    from scaling_lab.cli import main

    assert main([*command, "model.name=tiny-1", "train.batch_size=4", f"train.schedule={schedule}",
                 f"train.warmup_tokens={warmup_tokens}", "logger=none", f"results_dir={tmp_path / 'r'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("command", [["train"], ["sweep", "sweep=smoke"], ["sweep", "sweep=smoke", "plan=true"],
                                     ["sweep", "sweep=smoke", "hydra/launcher=packed"]])
def test_a_gpu_that_is_not_there_fails_in_one_line_before_any_work(tmp_path, capsys, command):
    from scaling_lab.cli import main

    assert main([*command, "accelerator=gpu", f"results_dir={tmp_path / 'r'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "accelerator=gpu, but torch" in lines[0] and "sees no CUDA GPU" in lines[0], lines
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_a_cluster_job_without_its_gpu_leaves_no_record(tmp_path):
    # a SLURM job whose node lacks the GPU: the launch could not check it, the job fails before a record exists
    from hydra import compose, initialize_config_dir

    from scaling_lab.conf_dir import CONF_DIR
    from scaling_lab.train.run import ConfigError, RunSpec, train

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("main", overrides=["accelerator=gpu", f"results_dir={tmp_path}", "logger=none"])
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        train(RunSpec.from_config(cfg))
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
@pytest.mark.parametrize("preset, listed", [("smoke", "6 runs, 73,728 tokens"),
                                            ("wsd_local", "sweep.branch: 3 trunks + cooldowns")])
def test_a_cluster_gpu_sweep_plans_on_a_login_node_without_a_time_estimate(tmp_path, capsys, preset, listed):
    # SLURM jobs find their GPUs on the nodes: the plan still lists every run, and says why it has no wall time
    from scaling_lab.cli import main

    assert main(["sweep", f"sweep={preset}", "hydra/launcher=slurm", "accelerator=gpu", "plan=true",
                 f"results_dir={tmp_path / 'r'}"]) == 0
    out = capsys.readouterr().out
    assert listed in out
    assert "estimated wall time: none, accelerator=gpu and this machine has no GPU to probe" in out
    assert not (tmp_path / "r").exists()


def test_status_of_a_damaged_manifest_is_one_line(tmp_path, capsys):
    from scaling_lab.cli import main

    layout.sweep_manifest(tmp_path).write_text("{half a manifest")
    assert main(["status", f"results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{layout.sweep_manifest(tmp_path)} is not a sweep manifest" in err


def test_a_sweep_with_unusable_fit_settings_fails_before_training(tmp_path, capsys):
    # the fit runs after every run has trained: its settings are checked before the first run starts
    from scaling_lab.cli import main

    assert main(["sweep", "sweep=smoke", "fit.confidence=95", f"results_dir={tmp_path / 'r'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "fit.confidence must be a number in (0, 1), got 95" in lines[0], lines
    assert not (tmp_path / "r").exists()
