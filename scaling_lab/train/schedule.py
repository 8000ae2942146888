"""Learning-rate schedules as multipliers of the peak rate, one value per optimizer step."""

from __future__ import annotations

import math


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


def warmup_steps_for(total_steps: int, warmup_frac: float) -> int:
    return max(1, round(warmup_frac * total_steps))
