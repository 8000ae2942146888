"""Branched WSD runs: the shorter budgets of a group leave one long trunk at the start of their own cooldown.

With schedule=wsd and a peak LR, batch size and warmup that do not depend on the run's length, a run of D_i tokens
trains, step for step, exactly as the longest run of its group (the trunk) until its own cooldown begins: the data
order is a pure function of (seed, sequence index) and the WSD rate is flat until then (Hägele et al. 2024, Sec. 4:
one constant-LR run, cooled down from its checkpoints, gives every shorter training length). The trunk saves a full
checkpoint (weights, AdamW moments, scheduler, loop counters, loader position, RNG) at each branch's cooldown start;
the branch resumes from it. That is the computation of training the branch alone, so it keeps the run id and the
record of an independent run, plus the record's `branch` field.

Validation points: the trunk also evaluates at each branch's own validation steps before its cooldown (the part of
the curve a branch inherits; one pass where the trunk validates anyway), and every record keeps only the points of
its own validation schedule. These passes and the snapshots are left out of the trunk's steady tokens/s.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from scaling_lab import layout
from scaling_lab.data import TokenCorpus, TokenDataModule
from scaling_lab.train import checkpoint
from scaling_lab.train.schedule import cooldown_start


@dataclass(frozen=True)
class Snapshot:
    """Where one branch leaves the trunk, and the validation steps it inherits from it."""

    step: int  # optimizer steps done: the branch's cooldown starts with the next one
    path: Path
    eval_steps: tuple[int, ...]


def eval_every(steps: int, eval_points: int) -> int:
    """Optimizer steps between validation passes (Lightning's val_check_interval) of a run of `steps` steps: rounded
    up, so a run takes at most `eval_points` passes with the one at its end (15 steps: every 2nd, not all 15)."""
    return max(1, math.ceil(steps / eval_points))


def eval_passes(steps: int, eval_points: int) -> int:
    """Validation passes of a run of `steps` steps: every eval_every steps, plus one at the end if that is off it."""
    return math.ceil(steps / eval_every(steps, eval_points))


def snapshot(trunk_id: str, branch, corpus: TokenCorpus, batch_size: int) -> Snapshot:
    """The trunk's snapshot for a branch (a RunSpec of the same group, so of the same batch size)."""
    dm = TokenDataModule(corpus, block_size=branch.model["block_size"], batch_size=batch_size,
                         tokens=int(branch.train["tokens"]), seed=branch.seed, val_tokens=branch.data["val_tokens"])
    start = cooldown_start(dm.steps, branch.train["cooldown_frac"])
    every = eval_every(dm.steps, branch.train["eval_points"])
    return Snapshot(start, layout.branch_checkpoint_path(branch.results_dir, trunk_id, branch.run_id),
                    tuple(range(every, start + 1, every)))


def own_curve(curve: list, every_tokens: int, final_tokens: int) -> list:
    """The points of a run's own validation schedule: every `every_tokens` and the end (drops its branches' points)."""
    return [p for p in curve if p[0] % every_tokens == 0 or p[0] == final_tokens]


class TrunkSnapshots(L.Callback):
    """Saves each branch's snapshot at its step, with a validation point on the curve at every step a branch's own
    schedule asks for one. Lightning's own pass supplies the point where it validates anyway (one pass, not two);
    the passes and writes of this callback happen inside `pause` (SteadyRate.paused: they are not training time).

    Goes before AtomicCheckpoint among the callbacks: a trunk resumed from a checkpoint of step s does not run step
    s's hooks again, so the snapshot and the point of step s must be taken before that checkpoint is.
    """

    def __init__(self, snapshots: list[Snapshot], val_loader, pause):
        self.due, self.evals = defaultdict(list), set()
        for s in snapshots:
            self.due[s.step].append(s)
            self.evals.update(s.eval_steps)
        self.val_loader, self.pause = val_loader, pause
        self._after_val: list[Path] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        step = trainer.global_step
        if step not in self.evals and step not in self.due:
            return
        lightning_validates = checkpoint.validates_now(trainer)
        # where Lightning validates, a snapshot whose branch has a point here waits for that pass (its branch, which
        # validates here too, resumes as after its own pass); the others go before it: a branch resumed from after
        # a pass its schedule does not take would log every later point one step behind its run trained alone
        now = [s.path for s in self.due.get(step, ()) if not (lightning_validates and step in s.eval_steps)]
        self._after_val = [s.path for s in self.due.get(step, ()) if s.path not in now]
        with self.pause(pl_module):
            if step in self.evals and not lightning_validates:
                _validate(trainer, pl_module, self.val_loader)
            for path in now:
                checkpoint.save(trainer, path)

    def on_validation_end(self, trainer, pl_module):
        if self._after_val:
            with self.pause(pl_module):
                for path in self._after_val:
                    checkpoint.save(trainer, path)
            self._after_val = []


def _validate(trainer, module, loader) -> None:
    """One validation pass as Lightning's loop runs it (eval mode, no grad, the precision plugin's context)."""
    module.eval()
    with torch.inference_mode(), trainer.precision_plugin.val_step_context():
        module.on_validation_epoch_start()
        for i, batch in enumerate(loader):
            module.validation_step(trainer.strategy.batch_to_device(batch), i)
        module.close_val_pass()
    module.train()


class BranchOrigin(L.Callback):
    """The record's `branch` field, carried through the branch's own checkpoints so a resumed branch keeps it."""

    def __init__(self, trunk_id: str | None):
        self.origin = {"trunk_run_id": trunk_id} if trunk_id else None

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self.origin:
            checkpoint["branch"] = self.origin

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if "branch" in checkpoint:  # the branch's own checkpoint
            self.origin = checkpoint["branch"]
        elif self.origin:  # the trunk's snapshot
            self.origin = {**self.origin, "branched_at_tokens": checkpoint["progress"]["tokens_seen"]}

    def record(self, tokens: int) -> dict | None:
        if not self.origin:
            return None
        return {**self.origin, "tokens_trained": tokens - self.origin["branched_at_tokens"]}
