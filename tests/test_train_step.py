"""The training step through Lightning's Trainer: micro-batches accumulate to the same optimizer step as one batch,
the micro-batch memory model, the steady-rate timer, and the speed knobs' config checks."""

from __future__ import annotations

import time

import lightning as L
import numpy as np
import pytest
import torch

from scaling_lab import accounting
from scaling_lab.data import TokenDataModule
from scaling_lab.data.prepare import TokenCorpus
from scaling_lab.model.config import ModelConfig
from scaling_lab.train import micro_batch, throughput
from scaling_lab.train.module import GPTModule
from scaling_lab.train.run import ConfigError
from scaling_lab.train.throughput import SteadyRate

SHAPE = ModelConfig(n_layer=2, d_model=32, n_head=2, vocab_size=61, block_size=16)
HP = {"lr": 3e-3, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0,
      "schedule": "cosine", "warmup_steps": 1, "min_lr_frac": 0.1, "divergence_factor": 1.5, "log_every": 1,
      "batch_size": 6,
      "compile": False, "compile_mode": "default", "micro_batch_size": None, "loss_chunk_rows": None}


def train_steps(steps: int, **overrides) -> GPTModule:
    tokens = np.random.default_rng(0).integers(0, SHAPE.vocab_size, 4096).astype(np.uint16)
    corpus = TokenCorpus(train=tokens, val=tokens[:512], vocab_size=SHAPE.vocab_size, meta={}, built=True)
    dm = TokenDataModule(corpus, SHAPE.block_size, HP["batch_size"], steps * HP["batch_size"] * SHAPE.block_size,
                         seed=0, val_tokens=SHAPE.block_size)
    L.seed_everything(0, verbose=False)
    module = GPTModule(SHAPE, {**HP, "total_steps": steps, **overrides}, total_steps=steps,
                       flops_per_token=accounting.train_flops_per_token(SHAPE))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, deterministic=True)
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == steps and module.tokens_seen == steps * HP["batch_size"] * SHAPE.block_size
    return module


@pytest.mark.parametrize("micro", [1, 4])  # 6 = 6 x 1, and 4 + 2: an uneven last micro-batch
def test_micro_batches_take_the_same_optimizer_steps_as_one_batch(micro):
    L.seed_everything(0, verbose=False)
    init = dict(GPTModule(SHAPE, HP, 1, 1.0).model.named_parameters())
    whole = train_steps(2)
    split = train_steps(2, micro_batch_size=micro)
    assert whole.micro_batch_size == 6 and split.micro_batch_size == micro
    moved = False
    for (name, a), b in zip(whole.model.named_parameters(), split.model.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6, msg=name)
        moved |= not torch.equal(a, init[name])
    assert moved  # the comparison is between trained weights, not two copies of the init
    assert split.last_train_loss == pytest.approx(whole.last_train_loss, rel=1e-6)


def test_fused_loss_trains_like_the_plain_loss():
    plain = train_steps(2)
    fused = train_steps(2, loss_chunk_rows=10)
    for (name, a), b in zip(plain.model.named_parameters(), fused.model.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=2e-6, msg=name)


@pytest.mark.parametrize("chunk_rows", [None, 5])
def test_the_loss_takes_a_ddp_ranks_strided_rows(chunk_rows):
    # under DDP each rank trains on y[rank::world] (module.py), a view that is not contiguous
    from scaling_lab.model.gpt import GPT

    torch.manual_seed(0)
    model = GPT(SHAPE)
    batch = torch.randint(SHAPE.vocab_size, (4, SHAPE.block_size))
    strided = batch[1::2]
    assert not strided.is_contiguous()
    assert model.loss(strided, strided, chunk_rows) == model.loss(strided.contiguous(), strided.contiguous(),
                                                                   chunk_rows)


def test_auto_micro_batch_is_the_largest_that_fits_the_runs_share_of_memory():
    gib = 2**30
    # 1 GiB of weights and gradients, 0.5 GiB per sequence; 6 GiB share, 1 GiB of AdamW moments to come
    assert micro_batch.largest_fitting({1: 1.5 * gib, 2: 2.0 * gib}, budget=6 * gib, extra=1 * gib) == 8
    assert micro_batch.largest_fitting({4: 3 * gib, 8: 5 * gib}, budget=6 * gib, extra=1 * gib) == 8
    assert micro_batch.balanced(8, 64) == 8 and micro_batch.balanced(8, 12) == 6 and micro_batch.balanced(100, 12) == 12
    with pytest.raises(ConfigError, match="train.micro_batch_size=auto"):
        micro_batch.largest_fitting({1: 1.5 * gib, 2: 2.0 * gib}, budget=2 * gib, extra=1 * gib)
    # probes fill the fused loss's chunk (4096 tokens = 4 sequences of 1024), where its memory stops growing
    assert micro_batch.probe_sizes(64, 1024, 4096) == (4, 8) and micro_batch.probe_sizes(64, 1024, None) == (1, 2)
    assert micro_batch.probe_sizes(4, 1024, 4096) == (2, 4)
    assert micro_batch.resolve(None, 12) == 12 and micro_batch.resolve(32, 12) == 12 and micro_batch.resolve(4, 12) == 4
    assert micro_batch.resolve("auto", 12) is None


def test_auto_micro_batch_of_a_packed_run_fits_its_share_of_the_free_memory():
    gib = 2**30
    probes = {4: 3 * gib, 8: 5 * gib}  # 1 GiB fixed (weights' gradients, one loss chunk), 0.5 GiB per sequence
    # alone on 80 GiB free: the whole batch of 64 fits
    assert micro_batch.choose(probes, free=80 * gib, runs_per_device=1, optimizer_bytes=1 * gib, batch=64) == 64
    # one of 5 packed runs: 0.85 x 16 GiB = 13.6 GiB, less 1 GiB fixed and 1 GiB of AdamW moments, holds 23 sequences;
    # a batch of 64 then takes 3 micro-batches, evened out to 22 + 22 + 20
    assert micro_batch.choose(probes, free=80 * gib, runs_per_device=5, optimizer_bytes=1 * gib, batch=64) == 22
    # 40 runs: a 1.7 GiB share cannot hold even one sequence (2.5 GiB): one line naming the key, no OOM later
    with pytest.raises(ConfigError, match="one sequence needs 2.50 GiB, this run's share of the device is 1.70 GiB"):
        micro_batch.choose(probes, free=80 * gib, runs_per_device=40, optimizer_bytes=1 * gib, batch=64)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.compile=maybe", "train.compile must be auto, true or false"),
        ("train.compile_mode=fastest", "train.compile_mode='fastest' is not one of"),
        ("train.micro_batch_size=0", "train.micro_batch_size must be an integer >= 1 or auto, null"),
        ("train.loss_chunk_rows=many", "train.loss_chunk_rows must be an integer >= 1 or null"),
        ("train.precision=16-mixed", "train.precision=16-mixed needs train.loss_chunk_rows=null"),
    ],
)
def test_bad_speed_knobs_fail_before_training_with_one_line(tmp_path, capsys, override, message):
    from scaling_lab.cli import main

    assert main(["train", override, f"results_dir={tmp_path / 'r'}"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines


def test_speed_knobs_leave_the_run_id_alone():
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from scaling_lab.train.run import RunSpec

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        ids = {RunSpec.from_config(compose("main", overrides=o)).run_id for o in (
            [], ["train.compile=true", "train.compile_mode=reduce-overhead", "train.micro_batch_size=3",
                 "train.loss_chunk_rows=null"])}
    assert len(ids) == 1


def test_a_number_s_spelling_leaves_the_run_id_alone():
    # Hydra reads train.tokens=1e6 as a float and =1000000 as an int; grad_clip=1 as an int, the default 1.0 as a float
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    from scaling_lab.train.run import RunSpec

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base=None):
        def run_id(*overrides):
            return RunSpec.from_config(compose("main", overrides=list(overrides))).run_id

        assert run_id("train.tokens=1e6") == run_id("train.tokens=1000000") == run_id()
        assert run_id("train.grad_clip=1") == run_id("train.grad_clip=1.0") == run_id()
        assert run_id("train.lr=1") == run_id("train.lr=1.0") != run_id()
        assert run_id("train.tokens=2e6") != run_id()


@pytest.mark.slow
def test_compiled_fused_loss_steps_match_eager_and_keep_the_checkpoint_keys():
    eager = train_steps(2, loss_chunk_rows=10)
    compiled = train_steps(2, loss_chunk_rows=10, compile=True)
    assert compiled._loss != compiled.model.loss and eager._loss == eager.model.loss  # train.compile=true on CPU
    for (name, a), b in zip(eager.model.named_parameters(), compiled.model.parameters()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=name)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints load either way


class _Stalls(L.Callback):
    """A clock that jumps 100 s in the first step (as compilation takes long) and in every validation pass."""

    def __init__(self):
        self.offset = 0.0

    def perf_counter(self) -> float:
        return time.perf_counter() + self.offset

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            self.offset += 100

    def on_validation_epoch_start(self, trainer, pl_module):
        self.offset += 100


def test_steady_rate_leaves_out_the_first_steps_and_validation(monkeypatch):
    steps, tokens_per_step = 16, HP["batch_size"] * SHAPE.block_size
    tokens = np.random.default_rng(0).integers(0, SHAPE.vocab_size, 8192).astype(np.uint16)
    corpus = TokenCorpus(train=tokens, val=tokens[:512], vocab_size=SHAPE.vocab_size, meta={}, built=True)
    dm = TokenDataModule(corpus, SHAPE.block_size, HP["batch_size"], steps * tokens_per_step, seed=0,
                         val_tokens=SHAPE.block_size)
    module = GPTModule(SHAPE, {**HP, "total_steps": steps}, total_steps=steps, flops_per_token=1.0)
    stalls, steady = _Stalls(), SteadyRate(tokens_per_step)
    monkeypatch.setattr(throughput, "time", stalls)
    trainer = L.Trainer(accelerator="cpu", devices=1, max_steps=steps, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, val_check_interval=4,
                        num_sanity_val_steps=0, callbacks=[stalls, steady])
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    real = time.perf_counter() - start
    assert stalls.offset == 500  # the first step and four validation passes, three of them inside the timed steps
    assert steady.skip == 4 and steady.steps == 12  # a quarter of the steps left out
    timed = steady.steps * tokens_per_step / steady.tokens_per_s()
    assert 0 < timed < real  # none of the jumps: only the real time of the 12 steps
