"""Shared by the tests that drive the real CLI (`python -m scaling_lab.cli`) in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "scaling_lab.cli"]
# For tests that compare losses bit for bit across processes. At 2 intra-op threads, 2 of 19 sessions of the exact-
# resume test (2026-11-23, CPU under load) had one training process, once an uninterrupted one, end ~2e-3 away from
# its identical twins. MKL's per-call thread choices were the same run to run; the cause is not pinned down.
# At 1 thread, 12 sessions out of 12 were exact (too few to prove a cure).
ONE_THREAD = {"OMP_NUM_THREADS": "1"}


def cli(*args: str, env: dict, timeout: float = 900, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def isolated_env(cache: Path, drop: tuple[str, ...] = ("WANDB_",), **extra: str) -> dict:
    """This process's environment without variables that would steer the runs (W&B credentials and mode, ...),
    with a token cache of the test's own and no GPU: the CLI tests check CPU runs (records, packed slots, exact
    resume), also on a machine that has one."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, "SCALING_LAB_CACHE": str(cache),
            "CUDA_VISIBLE_DEVICES": "", **extra}
