"""Where a result came from: hardware, package versions, git commit, timestamps (stored in every record)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("torch", "lightning", "hydra-core", "wandb", "datasets", "tokenizers", "numpy", "scipy", "scaling-lab")


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def versions() -> dict[str, str | None]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def hardware(accelerator: str) -> dict[str, object]:
    """The machine and the device a run trained on (`accelerator`: Lightning's, resolved: gpu or cpu)."""
    import torch  # only runs that trained call this; keeps the module importable without torch

    info: dict[str, object] = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
                               "torch_threads": torch.get_num_threads()}
    if accelerator == "gpu":
        info.update(accelerator="cuda", device=torch.cuda.get_device_name(0),
                    device_count=torch.cuda.device_count())
    else:  # a CPU run on a GPU machine too
        info.update(accelerator="cpu", device=platform.processor() or platform.machine())
    return info


def git_commit() -> str | None:
    """HEAD of the checkout this package runs from, `-dirty` when its tracked files differ from HEAD (the result
    then came from code no commit holds). An installed wheel has none, though its site-packages may lie inside some
    other repository (a project's .venv): only a repository whose top level holds the package counts."""
    repo = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True,
                             text=True, timeout=5, check=True)
        top, commit = out.stdout.splitlines()
        if Path(top).resolve() != repo:
            return None
        changes = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                                 capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if changes.strip() else commit
