"""A run's steady training speed: tokens/s once compilation and warm-up are behind it, validation and checkpoint
writes left out.

The record's `throughput.tokens_per_s` divides this process's tokens by its whole `trainer.fit` (the micro-batch
probe, torch.compile, CUDA-graph capture and validation passes included): what a sweep pays. For a short GPU run
those fixed costs can outweigh the training itself, so comparing speeds (packed runs against one, issue 5) needs the
steady rate too: timed from the start of this process's step `skip` to the end of training, without the time spent
in validation passes (Lightning's, and those a WSD trunk takes for its branches) and in checkpoint writes (resume
checkpoints, a trunk's snapshots), with a device sync only at those boundaries. A trunk's rate thus compares with
that of any other run of its shape.
"""

from __future__ import annotations

import contextlib
import time

import lightning as L
import torch

MAX_SKIP = 20  # steps left out at most: compilation happens in the first, CUDA-graph capture in the next ones


class SteadyRate(L.Callback):
    def __init__(self, tokens_per_step: int):
        self.tokens_per_step = tokens_per_step
        self.skip = self.started = self.steps = 0
        self._start = self._end = self._paused_at = None
        self._paused, self._depth = 0.0, 0

    def on_train_start(self, trainer, pl_module):
        self.skip = min(MAX_SKIP, (trainer.max_steps - trainer.global_step) // 4)  # of this process's steps

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.started == self.skip:
            self._start = _now(pl_module)
        self.started += 1

    def on_validation_start(self, trainer, pl_module):
        self._pause(pl_module)

    def on_validation_end(self, trainer, pl_module):
        self._resume(pl_module)

    @contextlib.contextmanager
    def paused(self, module: L.LightningModule):
        """Leaves the time inside out: for the work other callbacks do between training steps."""
        self._pause(module)
        try:
            yield
        finally:
            self._resume(module)

    def _pause(self, module) -> None:
        # pauses nest: a checkpoint written inside Lightning's validation hooks is inside that pass's pause
        self._depth += 1
        if self._depth == 1 and self._start is not None and self._end is None:
            self._paused_at = _now(module)

    def _resume(self, module) -> None:
        self._depth -= 1
        if self._depth == 0 and self._paused_at is not None:
            self._paused += _now(module) - self._paused_at
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
