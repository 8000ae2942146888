"""WSD schedule and branched sweeps (sweep.branch): a branch is exactly the independent WSD run of its budget.

The slow tests train real sweeps through the CLI (Hydra multirun -> Lightning -> records): one branched, one with
every run independent, one branched sweep killed after its trunk and re-launched, trunks stopped where a
checkpoint meets a branch's snapshot or validation point, and a branch off at a step where its trunk validates.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.utils.data import DataLoader, Dataset

from scaling_lab import claim, layout, records
from scaling_lab.conf_dir import CONF_DIR
from scaling_lab.data import TokenDataModule
from scaling_lab.data.prepare import TokenCorpus
from scaling_lab.sweep import branch, launch, plan
from scaling_lab.train import branching
from scaling_lab.train.module import GPTModule
from scaling_lab.train.run import RunSpec
from scaling_lab.train.schedule import cooldown_steps_for, warmup_cosine, warmup_stable_decay
from scaling_lab.train.throughput import SteadyRate
from support import ONE_THREAD, cli, isolated_env
from test_train_step import HP, SHAPE  # the tiny model of the training-step tests

# 8, 16, 32, 64 steps of 2 x 128 tokens; the trunk is the 16,384-token run of each size
BUDGETS = (2048, 4096, 8192, 16384)
GRID = ["sweep", "sweep=wsd_local", "model.name=tiny-1,tiny-2", f"train.tokens={','.join(map(str, BUDGETS))}",
        "train.batch_size=2", "train.warmup_tokens=512", "data.val_tokens=2048", "data.max_docs=300",
        "progress=false", "logger=none"]
STEP_TOKENS = 2 * 128


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("token-cache")
    return isolated_env(cache, **ONE_THREAD)


def by_id(results) -> dict[str, dict]:
    return {r["run_id"]: r for r in (records.read_record(p) for p in layout.record_paths(results))}


# --- schedule and config: no training ----------------------------------------------------------------------------


def test_wsd_runs_share_their_rates_until_their_own_cooldown():
    warmup = 5
    short, long = 100, 400
    rates = {t: [warmup_stable_decay(s, t, warmup, cooldown_steps_for(t, 0.2)) for s in range(t)] for t in (short, long)}
    start = short - cooldown_steps_for(short, 0.2)
    assert rates[short][:start + 1] == rates[long][:start + 1]  # the cooldown's first step still runs at the peak
    assert rates[short][warmup - 1] == 1.0 and rates[short][start] == 1.0
    cooldown = rates[short][start:]
    assert all(a > b for a, b in zip(cooldown, cooldown[1:])) and 0 < cooldown[-1] < 0.25
    # 1-sqrt shape (Hägele et al. 2024, Sec. 3): a quarter of the way down, half the rate is gone
    assert rates[short][start + 5] == pytest.approx(1 - math.sqrt(0.25))
    # cosine, by contrast, depends on the run's length from the first step after warmup
    assert warmup_cosine(warmup, short, warmup, 0.1) == warmup_cosine(warmup, long, warmup, 0.1) == 1.0
    assert warmup_cosine(warmup + 1, short, warmup, 0.1) != warmup_cosine(warmup + 1, long, warmup, 0.1)


def spec(*overrides: str) -> RunSpec:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return RunSpec.from_config(compose("main", overrides=list(overrides)))


def test_new_schedule_keys_leave_earlier_run_ids_alone():
    plain = spec("model.name=tiny-1").run_id
    assert spec("model.name=tiny-1", "train.cooldown_frac=0.3").run_id == plain  # cosine does not read it
    assert spec("model.name=tiny-1", "train.schedule=cosine", "train.warmup_tokens=null").run_id == plain
    wsd = spec("model.name=tiny-1", "train.schedule=wsd").run_id
    assert wsd != plain
    assert spec("model.name=tiny-1", "train.schedule=wsd", "train.min_lr_frac=0.5").run_id == wsd
    assert spec("model.name=tiny-1", "train.schedule=wsd", "train.cooldown_frac=0.3").run_id != wsd


@pytest.mark.parametrize("override, key", [
    ("train.schedule=cosine", "train.schedule=wsd"),
    ("train.lr=null", "train.lr"),
    ("train.batch_size=null", "train.batch_size"),
    ("train.warmup_tokens=null", "train.warmup_tokens"),
    ("train.cooldown_frac=1.5", "train.cooldown_frac"),
    ("train.schedule=linear", "train.schedule"),
])
def test_branching_that_cannot_be_exact_fails_before_training_with_one_line(tmp_path, env, override, key):
    proc = cli(*GRID, f"results_dir={tmp_path}", override, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.count("\n") == 1 and key in proc.stderr
    assert not list(tmp_path.iterdir())


def test_plan_of_wsd_local_counts_trunks_plus_cooldowns_and_packed_jobs(tmp_path, env):
    proc = cli("sweep", "sweep=wsd_local", f"results_dir={tmp_path}", "plan=true", "hydra/launcher=packed",
               "trainer.runs_per_device=2", env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    preset = OmegaConf.load(CONF_DIR / "sweep" / "wsd_local.yaml")
    sizes = str(preset.hydra.sweeper.params["model.name"]).split(",")
    budgets = [int(b) for b in str(preset.hydra.sweeper.params["train.tokens"]).split(",")]
    step = preset.train.batch_size * 128  # the default model.block_size

    def sequences(tokens):  # whole sequences, as TokenDataModule trains them
        return round(tokens / 128)

    def cooldown_tokens(tokens):  # from the first step after the stable phase to the end
        steps = math.ceil(sequences(tokens) / preset.train.batch_size)
        stable = steps - max(1, round(preset.train.cooldown_frac * steps))
        return sequences(tokens) * 128 - stable * step

    trunk, *branches = sorted(budgets, reverse=True)
    branched = len(sizes) * (sequences(trunk) * 128 + sum(cooldown_tokens(b) for b in branches))
    independent = len(sizes) * sum(sequences(b) * 128 for b in budgets)
    assert branched < independent
    assert (f"sweep.branch: {len(sizes)} trunks + cooldowns train {branched:,} tokens, {branched / independent:.2f}x "
            f"the {independent:,} of independent runs") in proc.stdout
    assert f"(hydra/launcher=packed: {len(sizes)} jobs, at most 2 at a time, each at its speed alone)" in proc.stdout
    assert "(one after another)" in proc.stdout
    assert not list(tmp_path.iterdir())


def test_the_time_estimate_charges_a_branch_its_cooldown_only(env, monkeypatch):
    monkeypatch.setenv("SCALING_LAB_CACHE", env["SCALING_LAB_CACHE"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sweep = launch.prepare("main", GRID[1:])
    table = plan.rows(sweep.runs, sweep.corpus, sweep.cfg["train"], sweep.cfg["data"]["val_tokens"], "6N")
    jobs = branch.jobs(sweep.runs, table, sweep.cfg["train"]["cooldown_frac"])
    trained = {run_id: tokens for job in jobs for run_id, tokens in job.items()}
    seconds = plan.estimate_seconds(table, trained, torch.device("cpu"), "32-true")
    row = {r.run_id: r for r in table}
    # per size: the 64-step trunk in full, then 2, 3 and 6 cooldown steps (20% of 8, 16, 32)
    assert [sorted(job.values()) for job in jobs] == [[s * STEP_TOKENS for s in (2, 3, 6, 64)]] * 2
    for job in jobs:  # one shape, one probed rate: each run's seconds are its own tokens plus evaluation at it
        rates = {(tokens + row[run_id].eval_tokens / 3) / seconds[run_id] for run_id, tokens in job.items()}
        assert max(rates) == pytest.approx(min(rates), rel=1e-12)


def test_packed_jobs_start_in_launch_order_in_the_first_free_slot():
    assert plan.makespan([5, 3, 3, 1], slots=1) == 12
    assert plan.makespan([5, 3, 3, 1], slots=2) == 6  # 5 | 3, 3 (ends at 6), 1 after the 5
    assert plan.makespan([1, 3, 3, 5], slots=2) == 8  # launch order, not longest first: 1, 3 | 3, 5
    assert plan.makespan([5, 3], slots=4) == 5


# --- real sweeps -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, env):
    """The same grid branched and with every run trained on its own, both WSD."""
    out = {}
    for name, branch in (("branched", "true"), ("independent", "false")):
        results = tmp_path_factory.mktemp(name)
        proc = cli(*GRID, f"results_dir={results}", f"sweep.branch={branch}", "sweep.fit=false", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[name] = results
    return out


@pytest.mark.slow
def test_a_branch_is_the_independent_run_of_its_budget(sweeps):
    branched, independent = by_id(sweeps["branched"]), by_id(sweeps["independent"])
    manifest = json.loads(layout.sweep_manifest(sweeps["branched"]).read_text())
    assert set(branched) == set(independent) == {m["run_id"] for m in manifest["runs"]}  # same run ids
    assert len(branched) == 8 and all(r["status"] == "completed" for r in branched.values())
    for run_id, rec in branched.items():
        alone = independent[run_id]
        assert rec["final_val_loss"] == pytest.approx(alone["final_val_loss"], rel=1e-6, abs=0)
        assert [p[0] for p in rec["val_curve"]] == [p[0] for p in alone["val_curve"]]  # its own eval schedule
        assert [p[1] for p in rec["val_curve"]] == pytest.approx([p[1] for p in alone["val_curve"]], rel=1e-6)
        assert rec["hparams"] == alone["hparams"] and rec["tokens"] == alone["tokens"]
        assert alone["branch"] is None


@pytest.mark.slow
def test_records_mark_branches_and_their_tokens(sweeps):
    recs = by_id(sweeps["branched"])
    trunks = {r["model"]["name"]: r["run_id"] for r in recs.values() if r["tokens"] == max(BUDGETS)}
    for rec in recs.values():
        if rec["run_id"] in trunks.values():
            assert rec["branch"] is None
            continue
        steps = rec["tokens"] // STEP_TOKENS
        start = steps - cooldown_steps_for(steps, 0.2)
        assert rec["branch"] == {"trunk_run_id": trunks[rec["model"]["name"]],
                                 "branched_at_tokens": start * STEP_TOKENS,
                                 "tokens_trained": rec["tokens"] - start * STEP_TOKENS}
    trained = sum(r["branch"]["tokens_trained"] if r["branch"] else r["tokens"] for r in recs.values())
    assert trained / sum(r["tokens"] for r in recs.values()) <= 0.65
    # snapshots live in the trunk's run dir only until their branch is done
    assert not list(layout.runs_dir(sweeps["branched"]).glob("*/*.ckpt"))


@pytest.mark.slow
def test_relaunch_trains_nothing_and_status_lists_every_run(sweeps, env):
    results = sweeps["branched"]
    before = {p: p.stat().st_mtime_ns for p in layout.record_paths(results)}
    proc = cli(*GRID, f"results_dir={results}", "sweep.fit=false", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {p: p.stat().st_mtime_ns for p in layout.record_paths(results)} == before
    assert (proc.stdout + proc.stderr).count("already completed") == 8
    status = cli("status", f"results_dir={results}", env=env)
    assert "8 completed, 0 running, 0 failed, 0 diverged, 0 pending" in status.stdout


@pytest.mark.slow
def test_fit_reads_a_branched_sweep_like_any_other(sweeps, env, tmp_path):
    proc = cli("fit", f"input={sweeps['branched']}", f"output_dir={tmp_path}", "logger=none", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fit = json.loads((tmp_path / "fit.json").read_text())
    assert fit["n_points"] == 8
    assert all(math.isfinite(fit["parametric"][k]) for k in ("E", "A", "B", "alpha", "beta"))


@pytest.mark.slow
def test_a_killed_branched_sweep_resumes_from_the_trunks_snapshots(tmp_path, env, sweeps):
    """kill -9 as soon as the trunk's record is written: the branches still to come start from its snapshots."""
    grid = [o if not o.startswith("model.name=") else "model.name=tiny-2" for o in GRID]
    args = [sys.executable, "-m", "scaling_lab.cli", *grid, f"results_dir={tmp_path}", "sweep.fit=false"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    trunk = next(r for r in by_id(sweeps["independent"]).values()
                 if r["model"]["name"] == "tiny-2" and r["tokens"] == max(BUDGETS))["run_id"]
    trunk_record = layout.record_path(tmp_path, trunk)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if trunk_record.exists() and records.read_record(trunk_record)["status"] == "completed":
            os.killpg(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    proc.wait()
    left = list(layout.run_dir(tmp_path, trunk).glob("branch-*.ckpt"))
    assert left, "the kill came after every branch had finished; nothing was left to resume"
    relaunch = cli(*grid, f"results_dir={tmp_path}", "sweep.fit=false", env=env)
    assert relaunch.returncode == 0, relaunch.stderr[-3000:]
    assert "resumes from" in relaunch.stdout + relaunch.stderr
    resumed, alone = by_id(tmp_path), by_id(sweeps["independent"])
    assert len(resumed) == 4
    for run_id, rec in resumed.items():
        assert rec["final_val_loss"] == pytest.approx(alone[run_id]["final_val_loss"], rel=1e-6, abs=0)
        assert (rec["branch"] is None) == (run_id == trunk)
    assert not list(layout.runs_dir(tmp_path).glob("*/*.ckpt"))


@pytest.mark.slow
@pytest.mark.parametrize("every", [13, 24])
def test_a_trunk_stopped_right_after_a_checkpoint_resumes_every_branch_exactly(tmp_path, env, sweeps, every):
    """The trunk stops inside the write of the 32-step branch's snapshot (step 26): a directory stands at its path,
    so the write fails as on a full disk, at the same point on every run (a kill -9 would have to land within
    milliseconds of the checkpoint). What the trunk left on disk is what kill -9 at that instant leaves. Its last
    checkpoint is that of step 13, the 16-step branch's snapshot step (every=13), or of step 24, a validation point
    the 32-step branch inherits (every=24). Re-launched, every run must be the uninterrupted sweep's."""
    grid = [o if not o.startswith("model.name=") else "model.name=tiny-1" for o in GRID]
    args = [*grid, f"results_dir={tmp_path}", "sweep.fit=false", f"train.checkpoint_every={every}"]
    reference = {k: r for k, r in by_id(sweeps["branched"]).items() if r["model"]["name"] == "tiny-1"}
    trunk = next(k for k, r in reference.items() if r["branch"] is None)
    last = next(k for k, r in reference.items() if r["tokens"] == 8192)  # the 32-step branch, off at step 26
    blocker = layout.branch_checkpoint_path(tmp_path, trunk, last)
    blocker.mkdir(parents=True)
    # held here: this launch skips that branch (without its snapshot it would train from scratch) for the next one
    with claim.hold(layout.claim_path(tmp_path, last)):
        first = cli(*args, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert records.read_record(layout.record_path(tmp_path, trunk))["status"] == "failed"
    assert not layout.record_path(tmp_path, last).exists()
    blocker.rmdir()

    relaunch = cli(*args, env=env)
    log = relaunch.stdout + relaunch.stderr
    assert relaunch.returncode == 0, log[-3000:]
    assert f"run {trunk} resumes from" in log and "trains from scratch" not in log
    resumed = by_id(tmp_path)
    assert set(resumed) == set(reference)
    for run_id, rec in resumed.items():
        want = reference[run_id]
        assert rec["status"] == "completed" and rec["branch"] == want["branch"]  # from its snapshot, not from scratch
        assert rec["final_val_loss"] == pytest.approx(want["final_val_loss"], rel=1e-6, abs=0)
        assert [p[0] for p in rec["val_curve"]] == [p[0] for p in want["val_curve"]]
        assert [p[1] for p in rec["val_curve"]] == pytest.approx([p[1] for p in want["val_curve"]], rel=1e-6)
    assert not list(layout.runs_dir(tmp_path).glob("*/*.ckpt"))


@pytest.mark.slow
def test_a_branch_off_at_a_step_where_its_trunk_validates_is_the_independent_run(tmp_path, env):
    """16 and 5 steps: the short run's cooldown starts at step 4, a validation step of both runs, so its snapshot is
    taken after the trunk's own pass there (which gives both their point) rather than before it."""
    grid = [o for o in GRID if not o.startswith(("model.name=", "train.tokens="))]
    grid += ["model.name=tiny-1", "train.tokens=1280,4096", "sweep.fit=false"]
    out = {}
    for branched in ("true", "false"):
        proc = cli(*grid, f"results_dir={tmp_path / branched}", f"sweep.branch={branched}", env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
        out[branched] = by_id(tmp_path / branched)
    short = next(k for k, r in out["true"].items() if r["tokens"] == 1280)
    rec, alone = out["true"][short], out["false"][short]
    assert rec["branch"]["branched_at_tokens"] == 4 * STEP_TOKENS
    assert [p[0] for p in rec["val_curve"]] == [p[0] for p in alone["val_curve"]] == [512, 1024, 1280]
    assert [p[1] for p in rec["val_curve"]] == pytest.approx([p[1] for p in alone["val_curve"]], rel=1e-6)
    assert rec["final_val_loss"] == pytest.approx(alone["final_val_loss"], rel=1e-6, abs=0)


class SlowReads(Dataset):
    """A validation set that takes `seconds` per batch to read, as from a slow disk, and counts its reads."""

    def __init__(self, batches: Dataset, seconds: float):
        self.batches, self.seconds, self.reads = batches, seconds, 0

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, b: int):
        self.reads += 1
        time.sleep(self.seconds)
        return self.batches[b]


@pytest.mark.slow  # real time: a validation read takes 1 s
def test_a_trunk_validates_once_a_step_and_its_extra_passes_are_not_training_time(tmp_path):
    steps, every, tokens_per_step, read_s = 16, 8, HP["batch_size"] * SHAPE.block_size, 1.0
    tokens = np.random.default_rng(0).integers(0, SHAPE.vocab_size, 8192).astype(np.uint16)
    corpus = TokenCorpus(train=tokens, val=tokens[:512], vocab_size=SHAPE.vocab_size, meta={}, built=True)
    dm = TokenDataModule(corpus, SHAPE.block_size, HP["batch_size"], steps * tokens_per_step, seed=0,
                         val_tokens=SHAPE.block_size)
    val = SlowReads(dm.val_dataloader().dataset, read_s)
    loader = DataLoader(val, batch_size=None)
    # Lightning validates at steps 8 and 16. Branch a needs points at 6 and 8 and its snapshot at 8: Lightning's
    # pass gives that point. Branch b needs a point at 10 and its snapshot there. The timer starts at step 5.
    snapshots = [branching.Snapshot(8, tmp_path / "a.ckpt", (6, 8)), branching.Snapshot(10, tmp_path / "b.ckpt", (10,))]
    steady = SteadyRate(tokens_per_step)
    module = GPTModule(SHAPE, {**HP, "total_steps": steps}, total_steps=steps, flops_per_token=1.0)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, val_check_interval=every,
                        num_sanity_val_steps=0,
                        callbacks=[branching.TrunkSnapshots(snapshots, loader, steady.paused), steady])
    trainer.fit(module, train_dataloaders=dm.train_dataloader(), val_dataloaders=loader)

    points = [p[0] // tokens_per_step for p in module.val_curve]
    assert points == [6, 8, 10, 16] and val.reads == len(points) * len(val)  # step 8: one pass, not two
    for snap in snapshots:  # each holds its own step's point
        curve = torch.load(snap.path, map_location="cpu", weights_only=False)["progress"]["val_curve"]
        assert curve[-1][0] == snap.step * tokens_per_step
    assert steady.skip == 4 and steady.steps == 12
    timed = steady.steps * tokens_per_step / steady.tokens_per_s()
    assert timed < read_s  # the 12 steps alone: the passes at 6 and 10 (a second each) are left out


@pytest.mark.parametrize("steps, points, expected", [(15, 8, 8), (100, 8, 8), (7, 8, 7), (1, 8, 1), (100, 3, 3),
                                                     (16, 2, 2)])
def test_a_run_takes_at_most_eval_points_validation_passes(steps, points, expected):
    # Lightning validates every `every` steps (val_check_interval); trainer.py adds one at the end if the last
    # interval stops short of it
    every = branching.eval_every(steps, points)
    passes = steps // every + (steps % every != 0)
    assert passes == expected
