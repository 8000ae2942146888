"""One trainer per run: an exclusive flock on `<run_dir>/claim.lock`, held for as long as the run trains.

The kernel drops the lock when its holder dies, however it dies (kill -9, OOM, preemption), so a claim cannot go
stale on one machine; on a shared filesystem the NFS lock manager does the same once the dead node's lease expires
(Lustre needs its `flock` mount option). The file's content only names the holder, for people and `status`; the
file is never deleted, since unlinking a lock file lets a late opener lock an orphan while a new claimer locks a
fresh file.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

# `status` probes a claim with a brief shared lock; a claimer that meets a probe retries instead of giving up
_RETRIES, _RETRY_S = 10, 0.05


class Busy(RuntimeError):
    """Another live process is training this run."""


@contextmanager
def hold(path: Path) -> Iterator[None]:
    """Claim the run for the duration of the block, or raise Busy naming the live holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _lock(fd, path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(_me()).encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def live_holder(path: Path) -> dict | None:
    """Who holds the claim now ({} when unreadable), or None when nobody does."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read(path)
    else:
        return None
    finally:
        os.close(fd)


def describe(owner: dict) -> str:
    where = f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}"
    job = f", job {owner['job']}" if owner.get("job") else ""
    return f"{where}{job} since {owner.get('since', '?')}"


def _lock(fd: int, path: Path) -> None:
    for attempt in range(_RETRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == _RETRIES - 1:
                raise Busy(f"run {path.parent.name} is being trained by {describe(_read(path))} ({path})") from None
            time.sleep(_RETRY_S)


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # caught between truncate and write
        return {}


def _me() -> dict:
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID')}"
    return {"host": socket.gethostname(), "pid": os.getpid(), "job": job,
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
