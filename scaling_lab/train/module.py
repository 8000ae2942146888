"""The LightningModule: next-token loss, AdamW, per-step LR schedule, token/FLOP counters, validation curve."""

from __future__ import annotations

import math
import lightning as L
import torch

from scaling_lab.model import mup
from scaling_lab.model.config import ModelConfig
from scaling_lab.model.gpt import GPT
from scaling_lab.train.run import Diverged
from scaling_lab.train.schedule import multiplier


class GPTModule(L.LightningModule):
    def __init__(self, shape: ModelConfig, hp: dict, total_steps: int, flops_per_token: float):
        super().__init__()
        self.shape, self.hp, self.total_steps = shape, hp, total_steps
        self.flops_per_token = flops_per_token
        self.model = GPT(shape)
        self.tokens_seen = 0
        self.val_curve: list[tuple[int, float]] = []
        self.last_train_loss = math.nan
        # uniform guessing scores ln(V); a loss well above that means the run blew up
        self.explode_at = hp["divergence_factor"] * math.log(shape.vocab_size)
        self._val_sum = self._val_count = None

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self._rank_share(x, y)
        self.tokens_seen += x.numel()  # every rank gets the whole batch (see _rank_share): counted once
        if batch_idx % self.hp["log_every"] == 0 or batch_idx == self.total_steps - 1:
            self._check_and_log(loss.detach())
        return loss

    def _check_and_log(self, loss: torch.Tensor) -> None:
        # one host sync (and, under DDP, one all-reduce) per logging interval, not per step
        value = self.trainer.strategy.reduce(loss.clone(), reduce_op="mean").item()  # reduce is in place
        if not math.isfinite(value) or value > self.explode_at:
            raise Diverged(f"training loss {value:.4g} at {self.tokens_seen} tokens (limit {self.explode_at:.3g})")
        self.last_train_loss = value
        self.log_dict(
            {"train/loss": value, "compute/train_loss": value, "tokens": float(self.tokens_seen),
             "flops": self.tokens_seen * self.flops_per_token, "lr": self.optimizers().param_groups[0]["lr"]},
            on_step=True, on_epoch=False, prog_bar=False,
        )

    def on_validation_epoch_start(self):
        self._val_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_count = 0

    def _rank_share(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """This rank's part of the batch's mean loss, weighted so that DDP's average over ranks is the full-batch mean:
        K ranks take the same optimizer steps on the same batches as one device (same math, same run id)."""
        world, rank = self.trainer.world_size, self.trainer.global_rank
        if world == 1:
            return self.model.loss(x, y)
        if rank >= len(x):  # fewer sequences than ranks: a zero share still joins the gradient all-reduce
            return self.model.loss(x[:1], y[:1]) * 0.0
        return self.model.loss(x[rank::world], y[rank::world]) * (y[rank::world].numel() * world / y.numel())

    def validation_step(self, batch, batch_idx):
        x, y = batch
        x, y = x[self.global_rank::self.trainer.world_size], y[self.global_rank::self.trainer.world_size]
        if y.numel():
            self._val_sum += self.model.loss(x, y).double() * y.numel()
            self._val_count += y.numel()

    def on_validation_epoch_end(self):
        val_loss = self.close_val_pass()
        self.log_dict({"val/loss": val_loss, "compute/val_loss": val_loss, "tokens": float(self.tokens_seen),
                       "flops": self.tokens_seen * self.flops_per_token}, prog_bar=True)

    def close_val_pass(self) -> float:
        """The pass's loss over all ranks, added to the validation curve (once per token count)."""
        counts = torch.stack([self._val_sum, torch.tensor(float(self._val_count), device=self.device,
                                                          dtype=torch.float64)])
        total, count = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        val_loss = total / count
        if not self.val_curve or self.val_curve[-1][0] != self.tokens_seen:
            self.val_curve.append((self.tokens_seen, val_loss))
        return val_loss

    def on_save_checkpoint(self, checkpoint):
        checkpoint["progress"] = {"tokens_seen": self.tokens_seen, "val_curve": self.val_curve,
                                  "last_train_loss": self.last_train_loss}

    def on_load_checkpoint(self, checkpoint):
        progress = checkpoint["progress"]
        self.tokens_seen, self.last_train_loss = progress["tokens_seen"], progress["last_train_loss"]
        self.val_curve = [tuple(point) for point in progress["val_curve"]]

    def configure_optimizers(self):
        hp = self.hp
        optimizer = torch.optim.AdamW(
            mup.param_groups(self.shape, self.model.named_parameters(), hp["lr"], hp["weight_decay"]),
            lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
            fused=self.device.type == "cuda",
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier(hp))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
