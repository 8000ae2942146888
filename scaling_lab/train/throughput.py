"""A run's steady training speed: tokens/s once compilation and warm-up are behind it, validation left out.

The record's `throughput.tokens_per_s` divides this process's tokens by its whole `trainer.fit` (the micro-batch
probe, torch.compile, CUDA-graph capture and validation passes included): what a sweep pays. For a short GPU run
those fixed costs can outweigh the training itself, so comparing speeds (packed runs against one, issue 5) needs the
steady rate too: timed from the start of this process's step `skip` to the end of training, without the time spent
in validation passes, with a device sync only at those boundaries.
"""

from __future__ import annotations

import time

import lightning as L
import torch

MAX_SKIP = 20  # steps left out at most: compilation happens in the first, CUDA-graph capture in the next ones


class SteadyRate(L.Callback):
    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.skip = self.started = self.steps = 0
        self._start = self._end = self._paused_at = None
        self._paused = 0.0

    def on_train_start(self, trainer, pl_module):
        self.skip = min(MAX_SKIP, (trainer.max_steps - trainer.global_step) // 4)  # of this process's steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.started == self.skip:
            self._start = _now(pl_module)
        self.started += 1

    def on_validation_start(self, trainer, pl_module):
        if self._start is not None and self._end is None:
            self._paused_at = _now(pl_module)

    def on_validation_end(self, trainer, pl_module):
        if self._paused_at is not None:
            self._paused += _now(pl_module) - self._paused_at
            self._paused_at = None

    def on_train_end(self, trainer, pl_module):
        if self._start is not None:
            self._end = _now(pl_module)
            self.steps = self.started - self.skip

    def tokens_per_s(self) -> float | None:
        """None when training did not get past the skipped steps."""
        if not self.steps:
            return None
        return self.steps * self.tokens_per_step / (self._end - self._start - self._paused)


def _now(module: L.LightningModule) -> float:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)  # queued kernels belong to the interval that launched them
    return time.perf_counter()
