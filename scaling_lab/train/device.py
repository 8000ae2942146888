"""What a config's `accelerator` and `train.precision` resolve to on this machine: for training and for the planner."""

from __future__ import annotations

import torch

from scaling_lab.train.run import ConfigError

# the autocast dtype of each mixed precision the planner's probe step can imitate (Lightning's precision strings)
AUTOCAST = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}


def accelerator(requested: str) -> str:
    """Lightning's accelerator for `accelerator` on this machine: auto = gpu when CUDA is available, else cpu.

    Raises ConfigError for a gpu that is not there: one line here, not Lightning's traceback after a record and a
    W&B run were started. Called only where the work runs (a job, the planner's probe, a local launch).
    """
    if requested == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if requested == "gpu" and not torch.cuda.is_available():
        raise ConfigError(f"accelerator=gpu, but torch {torch.__version__} sees no CUDA GPU on this machine "
                          "(accelerator=auto uses one when there is one)")
    return requested


def precision(requested: str, resolved_accelerator: str) -> str:
    """Lightning's precision for `train.precision`: auto = bf16-mixed on a GPU, 32-true elsewhere."""
    if requested == "auto":
        return "bf16-mixed" if resolved_accelerator == "gpu" else "32-true"
    return requested


def torch_device(resolved_accelerator: str) -> torch.device:
    return torch.device("cuda" if resolved_accelerator == "gpu" else "cpu")
