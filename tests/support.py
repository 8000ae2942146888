"""Shared by the tests that drive the real CLI (`python -m scaling_lab.cli`) in subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CLI = [sys.executable, "-m", "scaling_lab.cli"]


def cli(*args: str, env: dict, timeout: float = 900, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def start(*args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def isolated_env(cache: Path, drop: tuple[str, ...] = ("WANDB_",), **extra: str) -> dict:
    """This process's environment without variables that would steer the runs (W&B credentials and mode, ...),
    with a token cache of the test's own."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(drop)}, "SCALING_LAB_CACHE": str(cache),
            **extra}
