"""Training steps on CUDA through the real path (Trainer + GPTModule): torch.compile, bf16 autocast, the fused loss,
the measured micro-batch and fused AdamW. Skipped without CUDA."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import pytest
import torch

from scaling_lab import accounting
from scaling_lab.data import TokenDataModule
from scaling_lab.data.prepare import TokenCorpus
from scaling_lab.model.config import ModelConfig
from scaling_lab.train.checkpoint import ResumableBatches
from scaling_lab.train.module import GPTModule

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

SHAPE = ModelConfig(n_layer=2, d_model=64, n_head=4, vocab_size=1024, block_size=64)
STEPS, BATCH = 6, 16


class LoggedLosses(L.Callback):
    """The train/loss the module logged at each step (log_every=1)."""

    def __init__(self):
        self.seen: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append(pl_module.last_train_loss)


@pytest.mark.parametrize("compile_mode", ["default", "reduce-overhead"])
def test_compiled_bf16_steps_through_the_trainer_learn(compile_mode):
    rng = np.random.default_rng(0)
    # a learnable stream: each token is followed by a fixed successor, so the loss must fall within a few steps
    successor = rng.permutation(SHAPE.vocab_size)
    tokens = np.empty(STEPS * BATCH * (SHAPE.block_size + 1) + 1, dtype=np.int64)
    tokens[0] = 0
    for i in range(1, len(tokens)):
        tokens[i] = successor[tokens[i - 1]]
    corpus = TokenCorpus(train=tokens.astype(np.uint16), val=tokens[:4096].astype(np.uint16),
                         vocab_size=SHAPE.vocab_size, meta={}, built=True)
    dm = TokenDataModule(corpus, SHAPE.block_size, BATCH, STEPS * BATCH * SHAPE.block_size, seed=0,
                         val_tokens=4 * SHAPE.block_size)
    hp = {"lr": 1e-2, "weight_decay": 0.0, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0,
          "schedule": "cosine", "total_steps": STEPS, "warmup_steps": 1, "min_lr_frac": 1.0, "divergence_factor": 1.5,
          "log_every": 1, "batch_size": BATCH,
          "compile": True, "compile_mode": compile_mode, "micro_batch_size": "auto", "loss_chunk_rows": 256}
    module = GPTModule(SHAPE, hp, total_steps=STEPS, flops_per_token=accounting.train_flops_per_token(SHAPE))
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=STEPS, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        val_check_interval=STEPS, num_sanity_val_steps=0, callbacks=[losses := LoggedLosses()])
    trainer.fit(module, train_dataloaders=ResumableBatches(dm.train_dataloader().dataset, pin=True),
                val_dataloaders=dm.val_dataloader())

    assert trainer.global_step == STEPS and module.tokens_seen == STEPS * BATCH * SHAPE.block_size
    assert module.micro_batch_size == BATCH  # a 0.3M-parameter model: the whole batch fits
    assert next(module.model.parameters()).device.type == "cuda"
    assert all(map(math.isfinite, losses.seen)) and losses.seen[-1] < losses.seen[0] - 0.5, losses.seen
    assert len(module.val_curve) == 1 and math.isfinite(module.val_curve[0][1])
    assert set(module.state_dict()) == set(GPTModule(SHAPE, hp, STEPS, 1.0).state_dict())  # compiled, keys kept


class GradNorms(L.Callback):
    """The global gradient norm before clipping, at every optimizer step."""

    def __init__(self):
        self.seen: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # callbacks run before the module's clipping
        self.seen.append(float(torch.linalg.vector_norm(
            torch.stack([p.grad.norm() for p in pl_module.parameters() if p.grad is not None]))))


def _grad_norms(compile_mode: str | None, micro: int) -> list[float]:
    tokens = np.random.default_rng(0).integers(0, SHAPE.vocab_size, 65536).astype(np.uint16)
    corpus = TokenCorpus(train=tokens, val=tokens[:4096], vocab_size=SHAPE.vocab_size, meta={}, built=True)
    dm = TokenDataModule(corpus, SHAPE.block_size, BATCH, STEPS * BATCH * SHAPE.block_size, seed=0,
                         val_tokens=SHAPE.block_size)
    hp = {"lr": 1e-3, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0,
          "schedule": "cosine", "total_steps": STEPS, "warmup_steps": 1, "min_lr_frac": 0.1, "divergence_factor": 1.5,
          "log_every": 1, "batch_size": BATCH, "compile": compile_mode is not None,
          "compile_mode": compile_mode or "default", "micro_batch_size": micro, "loss_chunk_rows": 256}
    L.seed_everything(0, verbose=False)
    module = GPTModule(SHAPE, hp, total_steps=STEPS, flops_per_token=1.0)
    trainer = L.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_steps=STEPS, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, callbacks=[norms := GradNorms()])
    trainer.fit(module, train_dataloaders=ResumableBatches(dm.train_dataloader().dataset, pin=True))
    assert module.micro_batch_size == micro
    return norms.seen


def test_cuda_graphs_accumulate_micro_batches_like_one_batch():
    # reduce-overhead replays one CUDA graph per micro-batch; the summed gradient must be the whole batch's
    reference = _grad_norms(None, BATCH)
    for mode in ("default", "reduce-overhead"):
        assert _grad_norms(mode, 4) == pytest.approx(reference, rel=2e-2), mode
