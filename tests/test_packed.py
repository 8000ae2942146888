"""hydra/launcher=packed through the real CLI: the same runs as the basic launcher, in separate processes, never
more at once than runs_per_device allows; a killed run or a signal to the launcher loses nothing finished,
and no process of a run outlives the launcher."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from scaling_lab import claim, layout, records
from scaling_lab.cli import main
from scaling_lab.sweep.packed import PackedLauncher, _forwarding
from support import cli, isolated_env, start

# 4 smoke runs (2 sizes x 2 budgets), a few seconds each on a CPU
SMOKE = ["sweep=smoke", "model.name=tiny-1,tiny-2", "sweep.fit=false", "logger=none", "progress=false"]
PACKED = ["hydra/launcher=packed", "trainer.runs_per_device=2"]
# 128 optimizer steps of 2 sequences: long enough to be interrupted
LONG = ["model.name=tiny-1", "train.batch_size=2", "data.val_tokens=2048", "data.max_docs=300", "train.eval_points=2",
        "train.checkpoint_every=16"]
# A run's process that starts a helper of its own, as a DDP run starts its ranks; each notes every SIGTERM it gets
# and carries on, as Lightning does until its next step (or a rank stuck in a collective, for good).
MEMBER = """
import signal, subprocess, sys
from pathlib import Path
marks, role = Path(sys.argv[1]), sys.argv[2]
signal.signal(signal.SIGTERM, lambda signum, frame: (marks / f"{role}.SIGTERM").touch())
if role == "run":
    subprocess.Popen([sys.executable, __file__, str(marks), "helper"])
(marks / f"{role}.ready").touch()
while True:
    signal.pause()
"""
# A process that arms its death signal before or after the process that started it has ended
ORPHAN = """
import os, sys, time
from pathlib import Path
from scaling_lab.train.ranks import die_with_parent
parent, marks, when = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
while when == "after" and os.getppid() == parent:
    time.sleep(0.01)
die_with_parent(parent)
(marks / "armed").touch()
time.sleep(300)
"""
# ... and the process that starts it, tells its pid, then ends: at once, or once the death signal is armed
PARENT = """
import os, subprocess, sys, time
from pathlib import Path
script, marks, when = sys.argv[1:]
print(subprocess.Popen([sys.executable, script, str(os.getpid()), marks, when], stdout=subprocess.DEVNULL).pid,
      flush=True)
while when == "before" and not (Path(marks) / "armed").exists():
    time.sleep(0.01)
"""


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    cache = tmp_path_factory.mktemp("packed-token-cache")
    return isolated_env(cache, drop=("WANDB_", "CUDA_", "OMP_NUM_THREADS"))


def load(results) -> dict[str, dict]:
    return {r["run_id"]: r for r in map(records.read_record, layout.record_paths(results))}


def journal(results) -> list[dict]:
    (path,) = layout.packed_journals(results)
    return [json.loads(line) for line in path.read_text().splitlines()]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # at equal times an end sorts before a start
        running += change
        peak = max(peak, running)
    return peak


def claim_pid(results, run_id: str) -> int:
    return json.loads(layout.claim_path(results, run_id).read_text())["pid"]


def epoch(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


@pytest.mark.slow
def test_packed_sweep_trains_the_same_runs_in_separate_processes_two_at_a_time(tmp_path, env):
    basic, packed = tmp_path / "basic", tmp_path / "packed"
    threads = max(1, os.cpu_count() // 2)  # what the packed launcher gives each of its 2 children
    # the same thread count as the children: CPU float sums depend on it (by ~1e-6), the launcher must not
    assert cli("sweep", *SMOKE, f"results_dir={basic}", env={**env, "OMP_NUM_THREADS": str(threads)}).returncode == 0
    proc = start("sweep", *SMOKE, *PACKED, f"results_dir={packed}", env=env)
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode == 0, out[-3000:]
    want, got = load(basic), load(packed)
    assert len(got) == 4 and set(got) == set(want)
    for run_id, record in got.items():
        assert record["status"] == "completed"
        assert record["final_val_loss"] == want[run_id]["final_val_loss"]
        assert record["val_curve"] == want[run_id]["val_curve"]

    jobs = journal(packed)
    assert len(jobs) == 4 and all(j["exit_code"] == 0 and j["gpus"] is None for j in jobs)
    pids = {j["pid"]: j for j in jobs}
    assert len(pids) == 4 and proc.pid not in pids  # a fresh process per run, none of them the launcher
    assert most_at_once([(j["started"], j["ended"]) for j in jobs]) == 2
    for run_id, record in got.items():  # each run trained inside the process the journal names, by its claim
        assert record["hardware"]["torch_threads"] == threads
        job = pids[claim_pid(packed, run_id)]
        assert int(job["started"]) <= epoch(record["started_at"]) <= epoch(record["finished_at"]) <= job["ended"] + 1


@pytest.mark.slow
def test_a_design_sweep_reaches_its_children_through_hydras_state(tmp_path, env):
    """Ladder runs exist only in the launcher's ConfigStore; each child composes its run from the state it is handed."""
    proc = cli("sweep", "sweep=ladder_local", "sweep.design.sizes=[5000]", "sweep.design.multiples=[0.25,0.5]",
               "sweep.fit=false", "logger=none", "progress=false", *PACKED, f"results_dir={tmp_path}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads(layout.sweep_manifest(tmp_path).read_text())["runs"]
    recs = load(tmp_path)
    assert len(manifest) == 2 and set(recs) == {e["run_id"] for e in manifest}
    assert all(r["status"] == "completed" for r in recs.values())
    assert {r["tokens"] for r in recs.values()} == {e["tokens"] for e in manifest}
    assert len({j["pid"] for j in journal(tmp_path)}) == 2


@pytest.mark.slow
def test_a_killed_run_leaves_the_others_completed_and_is_resumed_by_a_relaunch(tmp_path, env):
    args = ("sweep", "sweep=smoke", *LONG, "train.tokens=32768,8192,12288,16384", "sweep.fit=false", "logger=none",
            "progress=false", *PACKED, f"results_dir={tmp_path}")
    proc = start(*args, env=env)
    victim = _first_live_claim(tmp_path, proc, prefix="tiny-1_32.8k")  # the longest run: still training
    os.kill(victim["pid"], signal.SIGKILL)
    out = proc.communicate(timeout=900)[0]
    assert proc.returncode != 0 and "RunProcessFailed" in out and "SIGKILL" in out, out[-3000:]
    recs = load(tmp_path)
    done = [r for r in recs.values() if r["status"] == "completed"]
    assert len(done) == 3 and victim["run"] not in {r["run_id"] for r in done}
    assert {j["exit_code"] for j in journal(tmp_path) if j["pid"] == victim["pid"]} == {-signal.SIGKILL}

    again = cli(*args, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(r["status"] == "completed" for r in load(tmp_path).values()) and len(load(tmp_path)) == 4
    assert (again.stdout + again.stderr).count("already completed") == 3


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_the_launcher_reaches_every_running_run(tmp_path, env, signum):
    proc = start("sweep", "sweep=smoke", *LONG, "train.tokens=32768", "seed=0,1,2", "sweep.fit=false", "logger=none",
                 "progress=false", *PACKED, f"results_dir={tmp_path}", env=env)
    _first_live_claim(tmp_path, proc, count=2)
    proc.send_signal(signum)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, out[-3000:]
    claims = list(layout.runs_dir(tmp_path).glob("*/claim.lock"))
    assert len(claims) == 2, "a third run was started after the signal"
    assert all(claim.live_holder(path) is None for path in claims), "a run outlived the launcher"
    assert all(r["status"] != "completed" for r in load(tmp_path).values()), "a run ignored the signal"
    assert f"{signal.Signals(signum).name}: passed on to 2 running runs" in out


@pytest.mark.slow
def test_a_killed_launcher_takes_every_run_and_its_ddp_ranks_with_it(tmp_path, env):
    proc = start("sweep", "sweep=smoke", *LONG, "train.tokens=32768", "seed=0,1", "trainer.devices=2",
                 "accelerator=cpu", "sweep.fit=false", "logger=none", "progress=false", *PACKED,
                 f"results_dir={tmp_path}", env=env)
    runs: set[int] = set()
    try:
        _first_live_claim(tmp_path, proc, count=2)
        runs = sessions_led_by_children(proc.pid)  # each run leads a session of its own
        assert len(runs) == 2
        assert _until(lambda: all(len(members(run)) >= 2 for run in runs), timeout=300)  # and has started rank 1
        proc.kill()
        proc.wait()
        assert _until(lambda: not members(*runs), timeout=5), f"outlived the launcher: {members(*runs)}"
    finally:
        for pid in members(*runs):  # what outlived the launcher, not to outlive this test too
            os.kill(pid, signal.SIGKILL)
        proc.kill()
        proc.stdout.close()


def test_a_signal_to_the_launcher_reaches_every_process_a_run_started(tmp_path):
    script = tmp_path / "member.py"
    script.write_text(MEMBER)
    run = subprocess.Popen([sys.executable, str(script), str(tmp_path), "run"], start_new_session=True)  # as _start

    def noted(*roles: str) -> bool:
        return all((tmp_path / f"{role}.SIGTERM").exists() for role in roles)

    try:
        assert _until(lambda: (tmp_path / "helper.ready").exists())
        assert len(members(run.pid)) == 2
        with _forwarding({run: (0, None, time.time())}) as received:
            os.kill(os.getpid(), signal.SIGTERM)  # passed on: the run and its helper each get it
            assert _until(lambda: noted("run", "helper")), f"SIGTERM reached only {list(tmp_path.glob('*.SIGTERM'))}"
            assert len(members(run.pid)) == 2
            os.kill(os.getpid(), signal.SIGTERM)  # a second one kills them all
            assert _until(lambda: not members(run.pid)), f"survived the SIGKILL: {members(run.pid)}"
        assert received == [signal.SIGTERM, signal.SIGTERM]
    finally:
        with suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
        run.wait()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_process_dies_with_its_parent_even_one_gone_before_it_armed_its_death_signal(tmp_path, when):
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN)
    parent = subprocess.run([sys.executable, "-c", PARENT, str(script), str(tmp_path), when], stdout=subprocess.PIPE,
                            text=True, timeout=60, check=True)
    orphan = int(parent.stdout)
    try:
        assert _until(lambda: not is_running(orphan)), "outlived its parent"
        assert (tmp_path / "armed").exists() == (when == "before")
    finally:
        if is_running(orphan):
            os.kill(orphan, signal.SIGKILL)


def is_running(pid: int) -> bool:
    return any(p == pid and state != "Z" for p, state, _, _ in _proc_stats())  # a zombie has ended, its status is left


def members(*sessions: int) -> set[int]:
    """Processes of these sessions that still run."""
    return {pid for pid, state, _, session in _proc_stats() if session in sessions and state != "Z"}


def sessions_led_by_children(parent: int) -> set[int]:
    return {pid for pid, _, ppid, session in _proc_stats() if ppid == parent and session == pid}


def _proc_stats() -> Iterator[tuple[int, str, int, int]]:
    """(pid, state, ppid, session) of every process, from /proc/PID/stat."""
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = path.read_text().rpartition(")")[2].split()  # the command name before ")" may hold spaces
        except OSError:  # ended while listed
            continue
        yield int(path.parent.name), fields[0], int(fields[1]), int(fields[3])


def _until(condition, timeout: float = 10) -> bool:
    """Whether `condition()` came true within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _first_live_claim(results, proc, count: int = 1, prefix: str = "", timeout: float = 600) -> dict:
    """Wait until `count` runs (ids starting with prefix) are claimed by live processes; one's pid and run id."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline
        paths = layout.runs_dir(results).glob(f"{prefix}*/claim.lock")
        live = [(path.parent.name, claim.live_holder(path)) for path in paths]
        live = [(run, holder) for run, holder in live if holder and holder.get("pid")]
        if len(live) >= count:
            return {"run": live[0][0], "pid": live[0][1]["pid"]}
        time.sleep(0.05)


@pytest.mark.parametrize("visible, accelerator, devices, slots", [
    ("3,5", "auto", 1, ["3", "5", "3", "5"]),
    ("0,1,2,3", "auto", 2, ["0,1", "2,3", "0,1", "2,3"]),
    ("0,1,2", "auto", 2, ["0,1", "0,1"]),
    ("0,1", "cpu", 1, [None, None]),
    ("", "auto", 1, [None, None]),
])
def test_each_run_slot_is_pinned_to_its_gpus(monkeypatch, visible, accelerator, devices, slots):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    launcher = PackedLauncher(runs_per_device=2, devices_per_run=devices)
    launcher.config = OmegaConf.create({"accelerator": accelerator})
    assert launcher.slots() == slots


def test_more_gpus_per_run_than_visible_is_refused(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    launcher = PackedLauncher(runs_per_device=1, devices_per_run=2)
    launcher.config = OmegaConf.create({"accelerator": "auto"})
    with pytest.raises(ValueError, match="trainer.devices=2"):
        launcher.slots()


@pytest.mark.parametrize("visible, overrides, message", [
    ("", ["trainer.runs_per_device=0"], "trainer.runs_per_device must be an integer >= 1"),
    ("", ["hydra/launcher=packed", "hydra.launcher.runs_per_device=0"], "trainer.runs_per_device must be an integer"),
    ("0", ["hydra/launcher=packed", "trainer.devices=2"], "trainer.devices=2 GPUs per run, but only 1 are visible"),
])
def test_bad_packing_is_one_line_before_any_training(tmp_path, capsys, monkeypatch, visible, overrides, message):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert main(["sweep", "sweep=smoke", *overrides, f"results_dir={tmp_path}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not list(tmp_path.iterdir())
