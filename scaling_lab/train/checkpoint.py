"""Exact resume: atomic periodic checkpoints in the run directory and a train loader that re-enters mid-run.

A checkpoint holds what Lightning saves (weights, AdamW moments, LR scheduler, loop counters, the loader position
below) plus the module's token count and validation curve and every RNG stream. It is written beside its final name
and renamed over it, so a kill at any moment leaves the previous checkpoint intact and loadable.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch.utils.data import Dataset

from scaling_lab import atomic

log = logging.getLogger(__name__)


class ResumableBatches:
    """Batches b = 0..len-1 of a dataset; Lightning saves the next b in checkpoints and restores it (Stateful).

    Batch b always holds the same global sequences (the data module's order is a pure function of the sequence
    index), so skipping the first b batches on resume gives exactly the stream an uninterrupted run sees.
    """

    def __init__(self, batches: Dataset, pin: bool = False):
        self.batches, self.pin = batches, pin  # pin: page-locked, so the copy to the GPU runs asynchronously
        self.next_batch = self.first_batch = 0  # first_batch: where this process started (throughput)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        while self.next_batch < len(self.batches):
            batch = self.batches[self.next_batch]
            self.next_batch += 1
            yield tuple(t.pin_memory() for t in batch) if self.pin else batch

    def state_dict(self) -> dict:
        return {"next_batch": self.next_batch}

    def load_state_dict(self, state: dict) -> None:
        self.next_batch = self.first_batch = int(state["next_batch"])


class AtomicCheckpoint(L.Callback):
    """Saves `path` every `every` optimizer steps (a step that validates: after validating) and on SIGTERM; the
    writes happen inside `pause` (SteadyRate.paused: they are not training time)."""

    def __init__(self, path: Path, every: int, pause):
        self.path, self.every, self.pause = Path(path), every, pause
        self._pending = False

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not self.every or trainer.global_step % self.every or trainer.global_step >= trainer.max_steps:
            return
        # Lightning skips a step's validation when resuming from a checkpoint taken before it; save after it instead
        if validates_now(trainer):
            self._pending = True
        else:
            self.save(trainer)

    def on_validation_end(self, trainer, pl_module):
        if self._pending and not trainer.sanity_checking:
            self._pending = False
            self.save(trainer)

    def on_exception(self, trainer, pl_module, exception):
        # SIGTERM (scancel, a preemption's grace period) stops Lightning between two training steps: keep the last.
        # Stopped inside a validation pass, the run keeps its previous checkpoint (half a pass cannot be resumed).
        if isinstance(exception, SIGTERMException) and not trainer.validating:
            self.save(trainer)

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        checkpoint["rng_states"] = _collect_rng_states(include_cuda=torch.cuda.is_available())

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        _set_rng_states(checkpoint["rng_states"])

    def save(self, trainer) -> None:
        with self.pause(trainer.lightning_module):
            save(trainer, self.path)


def validates_now(trainer) -> bool:
    """In on_train_batch_end: whether Lightning runs a validation pass right after this training step."""
    return trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher)


def save(trainer, path: Path) -> None:
    """A full training checkpoint at `path`, written beside it and renamed over it."""
    tmp = path.with_name(f".{path.name}.tmp")
    trainer.save_checkpoint(tmp, weights_only=False)  # every rank takes part; rank zero writes
    if trainer.is_global_zero:
        atomic.publish(tmp, path)


def resume_point(path: Path) -> Path | None:
    """The checkpoint to resume from, or None. One that does not load is set aside: the run restarts, never trusts it."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
        if "rng_states" not in state or "loops" not in state:
            raise ValueError("not a scaling-lab training checkpoint")
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint means starting over
        log.warning("checkpoint %s is unreadable (%s: %s); the run starts from scratch", path, type(e).__name__, e)
        os.replace(path, path.with_name(path.name + ".corrupt"))
        return None
    return path


def remove(path: Path) -> None:
    for leftover in (path, path.with_name(f".{path.name}.tmp"), path.with_name(path.name + ".corrupt")):
        leftover.unlink(missing_ok=True)
