"""`hydra/launcher=packed`: several runs at a time on each GPU, every run in a fresh process pinned to its GPU.

A small model leaves most of a large GPU idle; k runs side by side on one GPU share it. The launcher keeps at most
`trainer.runs_per_device` x (number of GPUs) runs going (on a machine without a GPU: `runs_per_device` at a time),
starts each as `python -m scaling_lab.sweep.packed` with CUDA_VISIBLE_DEVICES naming its GPU(s) and OMP_NUM_THREADS
its share of the CPU cores, and starts the next run when one ends. Like Hydra's joblib and submitit launchers, a child composes its own job config from the
Hydra singleton state it is handed (the ConfigStore with a design's runs included) and runs the task through
`run_job`, so each job is exactly what the basic launcher would run. A run that crashes its process (kill -9,
out of memory) comes back as a failed JobReturn after every other run has finished; SIGINT / SIGTERM are passed on
to every process of the running runs (each run's process group: a DDP run's ranks too; a second signal kills them)
and no new run starts. On Linux a run dies with the launcher (killed, out of memory, hung up), never training on
unwatched. Every ended process is journalled in `<sweep dir>/packed.jsonl` (job, pid, GPUs, start, end, exit code).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from hydra.core.plugins import Plugins
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

from scaling_lab import atomic, layout
from scaling_lab.train.ranks import die_with_parent
from scaling_lab.train.run import ConfigError, check_count

# Hydra instantiates launchers only from the `hydra_plugins` namespace (hydra.core.plugins.Plugins._instantiate);
# scaling-lab ships no top-level hydra_plugins package, so this module is published there under this name.
PLUGIN_MODULE = "hydra_plugins.scaling_lab_packed"
_POLL_S = 0.1  # how often the launcher looks for ended children
log = logging.getLogger(__name__)


class RunProcessFailed(RuntimeError):
    """A run's process ended without a JobReturn: it was killed or crashed the interpreter."""


class PackedLauncher(Launcher):
    def __init__(self, runs_per_device: int, devices_per_run: int = 1) -> None:
        # RunSpec checks trainer.* for every job; this catches hydra.launcher.* values set apart from them
        check_count("trainer.runs_per_device", runs_per_device)
        check_count("trainer.devices", devices_per_run)
        self.runs_per_device, self.devices_per_run = runs_per_device, devices_per_run
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.task_function: TaskFunction | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function

    def slots(self) -> list[str | None]:
        return slots(self.config.accelerator, self.runs_per_device, self.devices_per_run)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        free = deque(self.slots())
        where = "CPU, no pinning" if free[0] is None else f"GPUs {', '.join(sorted(set(free)))}"
        log.info("Launching %d jobs, at most %d at a time (%s)", len(job_overrides), len(free), where)
        # each child's share of the CPU cores for torch's intra-op threads: k processes of all-core thread pools
        # spin against each other (measured on 2 cores, two tiny-1 runs: 0.55x the aggregate of one alone, 1.71x
        # with one thread each); a value the user set is kept
        threads = str(max(1, (os.cpu_count() or 1) // len(free)))
        state = Singleton.get_state()
        pending = deque(enumerate(job_overrides, start=initial_job_idx))
        running: dict[subprocess.Popen, tuple[int, str | None, float]] = {}
        returns: dict[int, JobReturn] = {}
        with tempfile.TemporaryDirectory(prefix="scaling-lab-packed-") as tmp, _forwarding(running) as received:
            while running or (pending and not received):
                while pending and free and not received:
                    idx, overrides = pending.popleft()
                    slot = free.popleft()
                    pinned = f" (GPU {slot})" if slot else ""
                    log.info("\t#%d : %s%s", idx, " ".join(filter_overrides(overrides)), pinned)
                    proc = self._start(idx, list(overrides), slot, threads, Path(tmp), state)
                    running[proc] = (idx, slot, time.time())
                    if received:  # the signal came while this one was starting
                        _signal_run(proc, received[0])
                for proc in [p for p in running if p.poll() is not None]:
                    idx, slot, started = running.pop(proc)
                    free.append(slot)
                    returns[idx] = _job_return(Path(tmp), idx, job_overrides[idx - initial_job_idx], proc, slot)
                    _journal(sweep_dir, idx, proc, slot, started)
                time.sleep(_POLL_S)
        if received:  # the children have ended; now do what the signal would have done to this process
            signal.raise_signal(received[0])
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return [returns[idx] for idx in sorted(returns)]

    def _start(self, idx: int, overrides: list[str], slot: str | None, threads: str, tmp: Path,
               state: dict) -> subprocess.Popen:
        job = {"hydra_context": self.hydra_context, "task_function": self.task_function, "config": self.config,
               "overrides": overrides, "idx": idx, "singleton_state": state}
        payload = tmp / f"{idx}.job.pkl"
        payload.write_bytes(_dumps(job))
        env = {"OMP_NUM_THREADS": threads, **os.environ}
        if slot is not None:
            env["CUDA_VISIBLE_DEVICES"] = slot
        # a session of its own: a terminal's Ctrl-C reaches the children once, through the launcher, which signals
        # the run's process group (the session's) so that whatever the run started gets it too
        return subprocess.Popen([sys.executable, "-m", __name__, str(payload), str(tmp / f"{idx}.return.pkl"),
                                 str(os.getpid())], env=env, start_new_session=True)


def slots(accelerator: str, runs_per_device: int, devices_per_run: int) -> list[str | None]:
    """One entry per run that may run at once: the CUDA_VISIBLE_DEVICES value it gets (None: not pinned)."""
    gpus = [] if accelerator == "cpu" else visible_gpus()
    if not gpus:
        return [None] * runs_per_device
    if len(gpus) < devices_per_run:
        raise ConfigError(f"trainer.devices={devices_per_run} GPUs per run, but only {len(gpus)} are visible")
    groups = [",".join(gpus[i:i + devices_per_run]) for i in range(0, len(gpus) - devices_per_run + 1, devices_per_run)]
    return groups * runs_per_device  # round-robin: the first runs spread over the GPUs


def concurrent_jobs(launcher: DictConfig, accelerator: str) -> int:
    """Jobs of a multirun running at once under this hydra.launcher node: this launcher's slots, else 1 (the basic
    launcher runs one after another; a cluster launcher's parallelism is not this machine's to count)."""
    if launcher._target_ != f"{PLUGIN_MODULE}.{PackedLauncher.__name__}":
        return 1
    packed = PackedLauncher(launcher.runs_per_device, launcher.devices_per_run)  # checks both values
    return len(slots(accelerator, packed.runs_per_device, packed.devices_per_run))


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as CUDA_VISIBLE_DEVICES entries (indices, UUIDs or MIG ids)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip()]
    import torch  # only to count the GPUs; no CUDA context is created

    return [str(i) for i in range(torch.cuda.device_count())]


def register() -> None:
    """Make `hydra/launcher=packed` (conf/hydra/launcher/packed.yaml) instantiable in this process; the CLI calls it
    before Hydra starts."""
    sys.modules.setdefault(PLUGIN_MODULE, sys.modules[__name__])
    Plugins.instance().register(PackedLauncher)


PackedLauncher.__module__ = PLUGIN_MODULE


@contextmanager
def _forwarding(running: dict[subprocess.Popen, tuple]) -> Iterator[list[int]]:
    """While the block runs, SIGINT / SIGTERM go to every process of the running runs (a second one: SIGKILL); the
    signals received are listed in the yielded list."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield received
        return

    def forward(signum, frame):
        received.append(signum)
        log.warning("%s: passed on to %d running runs%s", signal.Signals(signum).name, len(running),
                    "; no new run starts" if len(received) == 1 else ", killed")
        for proc in running:
            _signal_run(proc, signum if len(received) == 1 else signal.SIGKILL)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _signal_run(proc: subprocess.Popen, signum: int) -> None:
    """`signum` to the run's whole process group: a DDP run's ranks left out of a SIGKILL would hang in their next
    collective, and a signal that reaches them only through rank zero comes late or not at all."""
    try:
        os.killpg(proc.pid, signum)  # the run leads its session, so its group id is its pid
    except ProcessLookupError:  # the run and all it started have ended
        pass


def _job_return(tmp: Path, idx: int, overrides: Sequence[str], proc: subprocess.Popen, slot: str | None) -> JobReturn:
    path = tmp / f"{idx}.return.pkl"
    if proc.returncode == 0 and path.exists():
        return pickle.loads(path.read_bytes())
    code = proc.returncode
    how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with code {code}"
    error = RunProcessFailed(f"job #{idx} (pid {proc.pid}{f', GPU {slot}' if slot else ''}) {how} before "
                             "returning; its record says how far it got")
    return JobReturn(overrides=list(overrides), status=JobStatus.FAILED, _return_value=error)


def _journal(sweep_dir: Path, idx: int, proc: subprocess.Popen, slot: str | None, started: float) -> None:
    entry = {"job": idx, "pid": proc.pid, "gpus": slot, "started": started, "ended": time.time(),
             "exit_code": proc.returncode}
    with open(layout.packed_journal(sweep_dir), "a") as f:
        f.write(json.dumps(entry) + "\n")


def _dumps(value: object) -> bytes:
    import cloudpickle  # task functions and OmegaConf resolvers may be closures, which plain pickle refuses

    return cloudpickle.dumps(value)


def _child(payload: Path, result: Path) -> None:
    """One job in this fresh process: compose its config from the handed-over Hydra state, run it, return it."""
    job = pickle.loads(payload.read_bytes())
    Singleton.set_state(job["singleton_state"])
    setup_globals()
    config = job["hydra_context"].config_loader.load_sweep_config(job["config"], job["overrides"])
    with open_dict(config):
        config.hydra.job.id = job["idx"]
        config.hydra.job.num = job["idx"]
    ret = run_job(hydra_context=job["hydra_context"], task_function=job["task_function"], config=config,
                  job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
    try:
        data = _dumps(ret)
    except Exception as e:  # noqa: BLE001 - a return value that cannot cross processes is reported, not lost
        ret.status, ret.return_value = JobStatus.FAILED, RunProcessFailed(f"unpicklable job return: {e!r}")
        data = _dumps(ret)
    atomic.write_bytes(result, data)


if __name__ == "__main__":
    die_with_parent(int(sys.argv[3]))
    _child(Path(sys.argv[1]), Path(sys.argv[2]))
