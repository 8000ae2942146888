"""Learning-rate schedules as multipliers of the peak rate, one value per optimizer step."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import partial

SCHEDULES = ("cosine", "wsd")


def warmup_cosine(step: int, total_steps: int, warmup_steps: int, final_frac: float) -> float:
    """Linear warmup, then cosine decay to `final_frac` of peak at the run's last step.

    The cosine cycle equals the run's own length: Hoffmann et al. 2022 (Sec. 3, App. B, Fig. A1) show that a cycle
    longer than the run overestimates the loss of short runs and biases the fitted exponents.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - 1 - warmup_steps)  # the last step lands exactly on final_frac
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return final_frac + (1.0 - final_frac) * 0.5 * (1.0 + math.cos(math.pi * progress))


def warmup_stable_decay(step: int, total_steps: int, warmup_steps: int, cooldown_steps: int) -> float:
    """Linear warmup, the peak rate, then a (1 - sqrt) cooldown towards zero over the last `cooldown_steps`.

    Hägele et al. 2024 (Scaling Laws and Compute-Optimal Training Beyond Fixed Training Durations, Sec. 3): a
    cooldown of ~20% of the steps in the 1-sqrt shape matches or beats cosine. Before its cooldown a run's rate does
    not depend on its length, so shorter runs are prefixes of a longer one (scaling_lab/train/branching.py). The
    cooldown's first step still runs at the peak: a branch resumed there takes the rate its trunk left behind.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    cooldown_start = total_steps - cooldown_steps
    if step < cooldown_start:
        return 1.0
    return 1.0 - math.sqrt((step - cooldown_start) / cooldown_steps)


def warmup_steps_for(total_steps: int, warmup_frac: float) -> int:
    return max(1, round(warmup_frac * total_steps))


def cooldown_steps_for(total_steps: int, cooldown_frac: float) -> int:
    return max(1, round(cooldown_frac * total_steps))


def cooldown_start(total_steps: int, cooldown_frac: float) -> int:
    """Optimizer steps a WSD run takes at the peak (and warmup) rate: where a branch leaves its trunk."""
    return total_steps - cooldown_steps_for(total_steps, cooldown_frac)


def warmup_steps_of(train: Mapping, total_steps: int, step_tokens: int) -> int:
    """`train.warmup_tokens` in whole steps when set (the same for every length: runs can branch), else a fraction."""
    if train["warmup_tokens"] is not None:
        return max(1, round(train["warmup_tokens"] / step_tokens))
    return warmup_steps_for(total_steps, train["warmup_frac"])


def multiplier(hp: Mapping) -> Callable[[int], float]:
    """The LR multiplier per step of a run's resolved hyperparameters (trainer.py builds `hp`)."""
    if hp["schedule"] == "wsd":
        return partial(warmup_stable_decay, total_steps=hp["total_steps"], warmup_steps=hp["warmup_steps"],
                       cooldown_steps=hp["cooldown_steps"])
    return partial(warmup_cosine, total_steps=hp["total_steps"], warmup_steps=hp["warmup_steps"],
                   final_frac=hp["min_lr_frac"])
