"""Fault tolerance through the real CLI: kill -9 and resume, preemption under submitit, racing launches, injected
divergence and crashes, bad input, W&B trouble. Every run is a real process training a real (tiny) model."""

from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from scaling_lab import claim, layout, records, tracking
from scaling_lab.cli import main
from scaling_lab.sweep.status import render
from support import ONE_THREAD, cli, isolated_env, start

SECRET = "local-wandb-key-that-must-never-be-written-0123456789"
# 128 optimizer steps of 2 sequences: long enough to be killed mid-run, a few seconds on a 2-core CPU
RUN = ["model.name=tiny-1", "train.tokens=32768", "train.batch_size=2", "data.val_tokens=2048", "data.max_docs=300",
       "train.eval_points=4", "train.log_every=4", "progress=false"]


def run(*overrides: str) -> list[str]:
    """RUN with some of its keys replaced or added."""
    keys = {o.split("=", 1)[0] for o in overrides}
    return [o for o in RUN if o.split("=", 1)[0] not in keys] + list(overrides)


VAL_EVERY = 32  # RUN's validation interval in steps: 128 steps // 4 eval points
TQDM_STEP = r"Training: \|[^|]*\| (\d+)/"  # Lightning's progress bar: optimizer steps done


def steady(step: int, resumed_at: int) -> bool:
    """Past the resume point and at least two steps before the next validation pass."""
    return step > resumed_at + 1 and 0 < step % VAL_EVERY < VAL_EVERY - 2


# what Lightning logs when its own SLURM requeue handler would compete with submitit's
LIGHTNING_REQUEUE = "SLURM auto-requeueing enabled"


def only_record(results) -> dict:
    (path,) = layout.record_paths(results)
    return records.read_record(path)


def wait_for(path, proc, timeout=300, poll=0.02):
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"process ended before {path.name} appeared:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"no {path} after {timeout}s"
        time.sleep(poll)


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    cache = tmp_path_factory.getbasetemp() / "fault-tolerance-token-cache"
    return isolated_env(cache, drop=("WANDB_", "SLURM_"), WANDB_API_KEY=SECRET, **ONE_THREAD)


@pytest.fixture(scope="session")
def reference(tmp_path_factory, env):
    """The uninterrupted run every resumed run must reproduce."""
    results = tmp_path_factory.mktemp("reference")
    proc = cli("train", *RUN, "train.checkpoint_every=0", "logger=none", f"results_dir={results}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return only_record(results)


def assert_same_run(record, reference):
    assert record["status"] == "completed" and record["run_id"] == reference["run_id"]
    assert abs(record["final_val_loss"] - reference["final_val_loss"]) <= 1e-6
    assert [p[0] for p in record["val_curve"]] == [p[0] for p in reference["val_curve"]]
    for (_, got), (_, want) in zip(record["val_curve"], reference["val_curve"]):
        assert abs(got - want) <= 1e-6
    assert record["tokens"] == reference["tokens"]


def read_until(proc, done, timeout=300) -> str:
    """The process's output up to the moment done(output) holds (tqdm's progress bar included)."""
    out, deadline = "", time.monotonic() + timeout
    while not done(out):
        chunk = os.read(proc.stdout.fileno(), 65536).decode(errors="replace")
        assert chunk and time.monotonic() < deadline, out[-3000:]
        out += chunk
    return out


def kill_9(proc) -> str:
    proc.kill()
    log = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    return log


@pytest.mark.slow
def test_kill_9_mid_write_kill_9_at_random_and_sigterm_each_resume_exactly(tmp_path, env, reference):
    import torch

    # a SLURM-looking environment: Lightning must leave requeueing to submitit (no handler of its own)
    slurm = {**env, "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "scaling-lab", "SLURM_JOB_ID": "4242",
             "SLURM_PROCID": "0", "SLURM_LOCALID": "0", "SLURM_NODEID": "0"}
    args = ("train", *RUN, "logger=none", f"results_dir={tmp_path}")
    ckpt = layout.checkpoint_path(tmp_path, reference["run_id"])
    partial = ckpt.with_name(f".{ckpt.name}.tmp")

    # 1. killed while writing a checkpoint (one every step): the previous one is intact
    proc = start(*args, "train.checkpoint_every=1", env=slurm)
    wait_for(ckpt, proc)
    wait_for(partial, proc, poll=0)  # the next save has begun: kill it before its rename
    logs = kill_9(proc)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert state["global_step"] >= 1 and state["progress"]["tokens_seen"] > 0

    # 2. the same command resumes; killed again at a random point after its next checkpoint
    proc = start(*args, "train.checkpoint_every=5", env=slurm)
    resumed_from = ckpt.stat().st_mtime_ns
    while ckpt.stat().st_mtime_ns == resumed_from:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.02)
    time.sleep(random.uniform(0.0, 0.1))  # the whole run takes about a second on a quiet 2-core machine
    live = render(tmp_path)
    logs += kill_9(proc)
    assert f"running    pid {proc.pid} on" in live and "job 4242" in live, live
    assert only_record(tmp_path)["status"] == "running"
    after = render(tmp_path)
    assert "pending" in after and "interrupted" in after and "from its checkpoint" in after, after

    # 3. SIGTERM (scancel, a preemption's grace period) mid-step: Lightning stops after the step, which is saved
    resumed_at = torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"]
    proc = start(*args, "train.checkpoint_every=0", "progress=true", env=slurm)
    logs += read_until(proc, lambda out: any(steady(int(n), resumed_at) for n in re.findall(TQDM_STEP, out)))
    proc.send_signal(signal.SIGTERM)
    logs += proc.communicate()[0]
    assert proc.returncode == 128 + signal.SIGTERM and "Received SIGTERM" in logs  # unfinished: not a success
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] > resumed_at + 1

    # 4. and once more to the end: the same losses as the run that was never interrupted
    last = cli(*args, "train.checkpoint_every=5", env=slurm)
    logs += last.stdout + last.stderr
    assert last.returncode == 0, logs[-3000:]
    assert logs.count("resumes from") == 3
    assert_same_run(only_record(tmp_path), reference)
    assert not ckpt.exists()  # deleted once the run completed
    assert LIGHTNING_REQUEUE not in logs


def test_an_unreadable_checkpoint_is_set_aside_not_trusted(tmp_path):
    from scaling_lab.train import checkpoint

    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"PK\x03\x04 torn")
    assert checkpoint.resume_point(ckpt) is None
    assert not ckpt.exists() and (tmp_path / "last.ckpt.corrupt").exists()
    assert checkpoint.resume_point(tmp_path / "absent.ckpt") is None


@pytest.mark.slow
def test_preempted_submitit_job_is_requeued_and_continues_the_same_wandb_run(tmp_path, env, reference):
    proc = start("sweep", "sweep=smoke", *RUN, "train.checkpoint_every=5", "sweep.fit=false", "logger=wandb",
                 "hydra/launcher=submitit_local", f"results_dir={tmp_path}", env=env)
    run_id = reference["run_id"]
    wait_for(layout.checkpoint_path(tmp_path, run_id), proc)
    task = claim.live_holder(layout.claim_path(tmp_path, run_id))
    os.kill(task["pid"], signal.SIGUSR2)  # submitit's preemption / time-limit signal
    out = proc.communicate(timeout=600)[0]
    assert proc.returncode == 0, out[-3000:]

    logs = "".join(p.read_text() for p in (tmp_path / ".hydra").rglob(".submitit/*/*.out"))
    assert "Requeued job" in logs and "resumes from" in logs and LIGHTNING_REQUEUE not in logs
    record = only_record(tmp_path)
    assert_same_run(record, reference)
    wandb_id = tracking.run_id(tmp_path, run_id)
    assert record["wandb"]["id"] == wandb_id
    attempts = sorted((layout.run_dir(tmp_path, run_id) / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and all(a.name.endswith(wandb_id) for a in attempts)  # one W&B run, two attempts
    first, second = (wandb_tokens(a, env) for a in attempts)
    # the second attempt resumed (its curve starts past the first's start) and carried the curve to the end; it
    # re-logs the steps between its checkpoint and the signal, which W&B online drops as steps already seen
    assert first and second and min(first) < min(second) and max(first) < max(second) == record["tokens"]


def wandb_tokens(run_dir, env) -> list[float]:
    wandb = os.path.join(os.path.dirname(sys.executable), "wandb")
    out = subprocess.run([wandb, "leet", "inspect", "--json", str(run_dir)], capture_output=True, text=True, env=env)
    rows = [json.loads(line) for line in out.stdout.splitlines() if '"type":"history"' in line]
    return [row["history"]["item"]["tokens"] for row in rows]


@pytest.mark.slow
def test_two_racing_launches_train_each_run_once(tmp_path, env):
    args = ("sweep", "sweep=smoke", *run("model.name=tiny-1,tiny-2", "train.tokens=8192"), "sweep.fit=false",
            "logger=none", "train.checkpoint_every=0", f"results_dir={tmp_path}")
    launches = [start(*args, env=env) for _ in range(2)]
    outputs = [p.communicate(timeout=600)[0] for p in launches]
    assert [p.returncode for p in launches] == [0, 0], outputs[0][-2000:] + outputs[1][-2000:]
    recs = [records.read_record(p) for p in layout.record_paths(tmp_path)]
    assert len(recs) == 2 and all(r["status"] == "completed" for r in recs)
    both = "".join(outputs)
    for r in recs:  # the line written when a run finishes training
        assert both.count(f"run {r['run_id']}: N=") == 1, both[-4000:]


EMPTY_SPLIT = "leaves the validation split empty"


@pytest.mark.slow
def test_a_diverging_and_a_crashing_run_do_not_stop_the_sweep(tmp_path, env):
    from scaling_lab.fit.table import _record_rows

    # lr=1000 blows up; data.max_chars=1 passes the config checks and crashes in the job, whose corpus of one
    # document leaves no validation split
    args = ("sweep", "sweep=smoke", *run("train.tokens=4096", "train.lr=0.003,1000", "train.log_every=1"),
            "data.max_chars=null,1", "train.checkpoint_every=2", "sweep.fit=false", "logger=none",
            f"results_dir={tmp_path}")
    proc = cli(*args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = [records.read_record(p) for p in layout.record_paths(tmp_path)]
    assert sorted(r["status"] for r in recs) == ["completed", "diverged", "failed", "failed"]
    for r in recs:
        status = r["status"]
        if status == "diverged":
            assert "training loss" in r["error"]
            assert not layout.checkpoint_path(tmp_path, r["run_id"]).exists()
        if status == "failed":
            assert EMPTY_SPLIT in r["error"] and (layout.run_dir(tmp_path, r["run_id"]) / "error.txt").exists()

    shown = cli("status", f"results_dir={tmp_path}", env=env).stdout
    assert "1 completed, 0 running, 2 failed, 1 diverged, 0 pending" in shown
    assert shown.count(EMPTY_SPLIT) == 2 and "training loss" in shown

    excluded: list[dict] = []
    rows = _record_rows(tmp_path, {"where": {}}, [], excluded)
    assert len(rows) == 1 and len(excluded) == 3
    assert sorted(e["reason"].split(":")[0] for e in excluded) == ["status diverged", "status failed", "status failed"]

    again = cli(*args, env=env)  # a re-launch retries the failures only
    log = again.stdout + again.stderr
    assert again.returncode == 0
    assert log.count("already completed") == 1 and log.count("already diverged") == 1
    assert log.count("run failed, sweep continues") == 2


@pytest.mark.parametrize("override, message", [
    ("train.tokens=256", "less than one optimizer step"),
    ("data.source=nope", "data.source"),
    ("data=nope", "data/nope"),
    ("trainer.devices=0", "trainer.devices must be an integer >= 1"),
    ("train.checkpoint_every=-1", "train.checkpoint_every"),
])
def test_bad_input_is_one_line_before_any_training(tmp_path, capsys, override, message):
    code = main(["train", "model.name=tiny-1", "train.batch_size=4", override, f"results_dir={tmp_path / 'r'}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("stage", ["train", "sweep"])
def test_unwritable_results_dir_is_one_line_before_any_training(tmp_path, capsys, stage):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    extra = ["sweep=smoke"] if stage == "sweep" else []
    code = main([stage, *extra, "model.name=tiny-1", f"results_dir={blocker / 'results'}"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "is not writable" in lines[0], lines


@pytest.mark.slow
def test_wandb_unreachable_the_run_completes_offline_and_no_secret_is_written(tmp_path, env):
    online = {**env, "WANDB_MODE": "online", "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "3"}
    proc = cli("train", *run("train.tokens=4096"), "logger=wandb", f"results_dir={tmp_path}", env=online)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "logging offline instead" in proc.stdout + proc.stderr
    record = only_record(tmp_path)
    assert record["status"] == "completed" and record["wandb"]["mode"] == "offline"
    offline = list((layout.run_dir(tmp_path, record["run_id"]) / "wandb").glob("offline-run-*"))
    assert len(offline) == 1 and offline[0].name.endswith(record["wandb"]["id"])  # `wandb sync` uploads it later
    assert SECRET not in proc.stdout + proc.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path


def test_a_claim_is_exclusive_names_its_holder_and_dies_with_its_process(tmp_path):
    lock = tmp_path / "run" / "claim.lock"
    with claim.hold(lock):
        assert claim.live_holder(lock)["pid"] == os.getpid()
        with pytest.raises(claim.Busy, match=f"pid {os.getpid()}"), claim.hold(lock):
            pass
    assert claim.live_holder(lock) is None

    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from scaling_lab import claim; h = claim.hold(Path(sys.argv[1])); "
                               "h.__enter__(); print('held', flush=True); time.sleep(600)", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert claim.live_holder(lock)["pid"] == holder.pid
    holder.kill()
    holder.wait()
    assert claim.live_holder(lock) is None  # no stale claim after kill -9
    with claim.hold(lock):
        assert claim.live_holder(lock)["pid"] == os.getpid()


def test_training_a_claimed_run_is_refused_with_one_line(tmp_path, capsys):
    from scaling_lab.cli import _compose
    from scaling_lab.train.run import RunSpec

    spec = RunSpec.from_config(_compose("main", [*RUN, f"results_dir={tmp_path}"]))
    with claim.hold(layout.claim_path(tmp_path, spec.run_id)):
        assert main(["train", *RUN, f"results_dir={tmp_path}"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"run {spec.run_id} is being trained by pid {os.getpid()}" in line
    assert not list(layout.record_paths(tmp_path))


def test_slurm_preset_launches_one_array_with_submitit_owning_requeue():
    from hydra import compose, initialize_config_dir

    from scaling_lab.conf_dir import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("main", overrides=["sweep=smoke", "hydra/launcher=slurm", "trainer.devices=4",
                                         "hydra.launcher.partition=gpu", "hydra.launcher.account=lab"],
                      return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")  # map_array: one SLURM array job per sweep
    assert (launcher.partition, launcher.account, launcher.gpus_per_node) == ("gpu", "lab", 4)
    assert launcher.tasks_per_node == 1 and launcher.max_num_timeout > 0 and launcher.array_parallelism > 0
    assert math.isfinite(launcher.timeout_min)
