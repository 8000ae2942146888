"""The LightningModule: next-token loss, AdamW, per-step LR schedule, token/FLOP counters, validation curve.

Manual optimization: one training_step is one optimizer step over train.batch_size sequences, accumulated over
micro-batches (scaling_lab/train/micro_batch.py), clipped, then AdamW (fused on CUDA) and the LR scheduler. Nothing
in a step waits for the device: the loss is read back only every train.log_every steps.
"""

from __future__ import annotations

import contextlib
import math

import lightning as L
import torch
from lightning.pytorch.strategies import ParallelStrategy

from scaling_lab.model import mup
from scaling_lab.model.config import ModelConfig
from scaling_lab.model.gpt import GPT
from scaling_lab.train import micro_batch
from scaling_lab.train.run import Diverged
from scaling_lab.train.schedule import multiplier


class GPTModule(L.LightningModule):
    def __init__(self, shape: ModelConfig, hp: dict, total_steps: int, flops_per_token: float,
                 runs_per_device: int = 1):
        super().__init__()
        self.shape, self.hp, self.total_steps = shape, hp, total_steps
        self.runs_per_device = runs_per_device  # runs sharing this GPU: the micro-batch fits into a 1/k share
        self.flops_per_token = flops_per_token
        self.model = GPT(shape)
        self.automatic_optimization = False
        self.micro_batch_size: int | None = None  # set in on_fit_start, where the device is known
        self._loss = self.model.loss  # compiled in place of the bound method: state_dict keys stay the model's
        self.tokens_seen = 0
        self.val_curve: list[tuple[int, float]] = []
        self.last_train_loss = math.nan
        # uniform guessing scores ln(V); a loss well above that means the run blew up
        self.explode_at = hp["divergence_factor"] * math.log(shape.vocab_size)
        self._val_sum = self._val_count = None

    def on_fit_start(self):
        hp, device = self.hp, self.device
        rows = math.ceil(hp["batch_size"] / self.trainer.world_size)  # this rank's share of a batch
        self.micro_batch_size = micro_batch.resolve(hp["micro_batch_size"], rows)
        if self.micro_batch_size is None:
            self.micro_batch_size = rows if device.type != "cuda" else micro_batch.measure_cuda(
                self._probe_step, device, self.runs_per_device, self._adamw_state_bytes(), rows,
                micro_batch.probe_sizes(rows, self.shape.block_size, hp["loss_chunk_rows"]))
        if compile_enabled(hp["compile"], device):
            # one process can train many runs (the basic launcher, a trunk and its branches); each new model would
            # add compilations of GPT.loss until dynamo's recompile limit (8) silently left the rest eager
            torch.compiler.reset()
            self._loss = torch.compile(self.model.loss, mode=hp["compile_mode"], dynamic=False)

    def _probe_step(self, sequences: int) -> None:
        x = torch.zeros(sequences, self.shape.block_size, dtype=torch.long, device=self.device)
        with self.trainer.precision_plugin.train_step_context():
            loss = self.model.loss(x, x, chunk_rows=self.hp["loss_chunk_rows"])
        loss.backward()
        self.model.zero_grad(set_to_none=True)

    def _adamw_state_bytes(self) -> float:
        return 2.0 * sum(p.numel() * 4 for p in self.model.parameters())  # two fp32 moments, allocated lazily

    def training_step(self, batch, batch_idx):
        x, y = batch
        optimizer, scheduler = self.optimizers(), self.lr_schedulers()
        loss = self._accumulate(x, y)
        self.tokens_seen += x.numel()  # every rank gets the whole batch (see _accumulate): counted once
        if batch_idx % self.hp["log_every"] == 0 or batch_idx == self.total_steps - 1:
            self._check_and_log(loss)  # before the step: the logged lr is the one this step uses
        optimizer.step()  # through Lightning's optimizer: precision plugin, global_step, on_before_optimizer_step
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()

    def _accumulate(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Backward over this rank's micro-batches; returns this rank's share of the batch's mean loss.

        Each micro-batch's mean loss is weighted by its tokens over the batch's, and under DDP by the world size, so
        that DDP's average over ranks of the summed gradients is the full batch's: K ranks and any micro-batch size
        take the same optimizer steps on the same batches as one device with one micro-batch (same math, same id).
        """
        world, rank = self.trainer.world_size, self.trainer.global_rank
        weight = world / y.numel()
        x, y = x[rank::world], y[rank::world]
        if not len(y):  # fewer sequences than ranks: a zero share still joins the gradient all-reduce
            x, y, weight = x.new_zeros(1, x.shape[1]), y.new_zeros(1, y.shape[1]), 0.0
        parts = list(zip(x.split(self.micro_batch_size), y.split(self.micro_batch_size)))
        if len(parts) > 1:
            own_grads(self.model.parameters())
        total = torch.zeros((), device=self.device)
        for i, (xm, ym) in enumerate(parts):
            with self._no_sync_unless(i == len(parts) - 1):
                share = self._loss(xm, ym, chunk_rows=self.hp["loss_chunk_rows"]) * (ym.numel() * weight)
                self.manual_backward(share)
            total += share.detach()
        return total

    def _no_sync_unless(self, last: bool):
        """DDP all-reduces gradients after the last micro-batch only (Lightning's own accumulation does the same)."""
        strategy = self.trainer.strategy
        if last or not isinstance(strategy, ParallelStrategy):
            return contextlib.nullcontext()
        return strategy.block_backward_sync()

    def on_before_optimizer_step(self, optimizer):
        # here, after the precision plugin unscaled fp16 gradients: clipping sees the true norm under any precision
        if self.hp["grad_clip"]:
            self.clip_gradients(optimizer, gradient_clip_val=self.hp["grad_clip"], gradient_clip_algorithm="norm")

    def _check_and_log(self, loss: torch.Tensor) -> None:
        # one host sync (and, under DDP, one all-reduce) per logging interval, not per step
        value = self.trainer.strategy.reduce(loss.clone(), reduce_op="mean").item()  # reduce is in place
        if not math.isfinite(value) or value > self.explode_at:
            raise Diverged(f"training loss {value:.4g} at {self.tokens_seen} tokens (limit {self.explode_at:.3g})")
        self.last_train_loss = value
        if self.logger is not None:
            # straight to the logger, not through self.log: Lightning's result collection costs ~3 ms a call, during
            # which the device, just synced, sits idle (a tenth of a small model's step)
            self.logger.log_metrics(
                {"train/loss": value, "compute/train_loss": value, "tokens": float(self.tokens_seen),
                 "flops": self.tokens_seen * self.flops_per_token, "lr": self.optimizers().param_groups[0]["lr"]},
                step=self.global_step,
            )

    def on_validation_epoch_start(self):
        self._val_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_count = 0

    def validation_step(self, batch, batch_idx):
        x, y = batch
        x, y = x[self.global_rank::self.trainer.world_size], y[self.global_rank::self.trainer.world_size]
        if y.numel():
            self._val_sum += self._loss(x, y, chunk_rows=self.hp["loss_chunk_rows"]).double() * y.numel()
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


def compile_enabled(setting: bool | str, device: torch.device) -> bool:
    """train.compile: auto = on CUDA only (on CPU, compilation costs more than tiny models win)."""
    return device.type == "cuda" if setting == "auto" else bool(setting)


def own_grads(parameters) -> None:
    """Zeroed .grad buffers before accumulating micro-batches: otherwise autograd adopts the first micro-batch's
    gradient tensor as .grad, and under CUDA graphs (compile_mode reduce-overhead) that tensor is a graph output
    which the next micro-batch's replay overwrites (pytorch/pytorch#169545: wrong sums or a RuntimeError)."""
    for p in parameters:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
