"""Multi-device runs (trainer.devices=K > 1): the launched job is rank zero and starts ranks 1..K-1 itself.

The ranks are local processes joined by Lightning's DDP strategy through the environment variables of its
LightningEnvironment. Starting them here, not through Lightning's script re-launcher, keeps one Hydra job per run
under every launcher (basic, submitit_local, submitit_slurm with tasks_per_node=1): only rank zero claims the run,
writes its record and talks to W&B. One node per run; K is at most the GPUs of that node. On Linux a rank dies with
rank zero: without it the others would wait in their next collective for good.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

log = logging.getLogger(__name__)
_DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK")
_GRACE_S = 60  # how long rank zero waits for the other ranks to leave after it finished or failed
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


@contextmanager
def workers(spec, resume: Path | None, branches: list = ()) -> Iterator[None]:
    """Around rank zero's training: ranks 1..K-1 run the same spec from the same checkpoint (and take part in the
    snapshots a WSD trunk saves for its `branches`), then must exit 0."""
    devices = spec.trainer["devices"]
    if devices == 1:
        yield
        return
    saved = {key: os.environ.get(key) for key in _DDP_ENV}
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(devices), NODE_RANK="0",
                      LOCAL_RANK="0")
    payload = json.dumps({"spec": asdict(spec), "resume": resume and str(resume),
                          "branches": [asdict(b) for b in branches]}, default=str)
    procs = [subprocess.Popen([sys.executable, "-m", __name__, payload, str(os.getpid())],
                              env={**os.environ, "LOCAL_RANK": str(rank)})
             for rank in range(1, devices)]
    try:
        yield
    except BaseException:
        _stop(procs)
        raise
    finally:
        _leave(saved)
    failed = {rank: code for rank, code in enumerate(_stop(procs), start=1) if code}
    if failed:
        raise RuntimeError(f"DDP ranks exited with errors: {failed} (their tracebacks are in this job's log)")


def die_with_parent(parent: int) -> None:
    """On Linux, have the kernel SIGKILL this process once `parent`, the process that started it, has ended; elsewhere
    nothing. For a process started by a supervisor that may itself be killed (SIGKILL, the OOM killer, a hangup) and
    is the only one that would stop it. The death signal follows the thread that started this process: it must be
    one that outlives the child, as the thread that waits for it does."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    if os.getppid() != parent:  # it ended while this process started up, before the death signal was set
        os.kill(os.getpid(), signal.SIGKILL)


def _stop(procs: list[subprocess.Popen]) -> list[int]:
    for proc in procs:
        try:
            proc.wait(timeout=_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
    return [proc.wait() for proc in procs]


def _leave(saved: dict[str, str | None]) -> None:
    import torch.distributed as dist

    # the next run of a sequential multirun builds its own process group, possibly with another world size
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(payload: str) -> None:
    from scaling_lab.train.run import RunSpec
    from scaling_lab.train.trainer import fit_rank

    def spec_of(fields: dict) -> RunSpec:
        spec = RunSpec(**fields)
        return replace(spec, run_dir=Path(spec.run_dir), results_dir=Path(spec.results_dir))

    fields = json.loads(payload)
    fit_rank(spec_of(fields["spec"]), fields["resume"] and Path(fields["resume"]), track=False,
             branches=[spec_of(b) for b in fields["branches"]])


if __name__ == "__main__":
    die_with_parent(int(sys.argv[2]))
    logging.basicConfig(level=logging.WARNING)
    _worker(sys.argv[1])
