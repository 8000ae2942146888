"""Training throughput: the real Lightning path against a bare PyTorch loop over the same model and batches.

    python scripts/bench_throughput.py --device cpu --sizes tiny-1,tiny-3 --batch 16 --block 128 --vocab 257
    python scripts/bench_throughput.py --device cuda --sizes gpt-7m,gpt-16m,gpt-30m,gpt-51m,gpt-124m,gpt-253m

One line per size: tokens/s, TFLOP/s and MFU of each path, and Lightning / bare. FLOPs per token follow the
`6N_attention` convention (6N + 12 L d T, PaLM App. B), as nanoGPT's MFU does; the peak is measured here
(dense matmuls in the training dtype), not taken from a spec sheet. Batches come from a token file on disk
(uniform random ids) through the project's TokenDataModule.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from scaling_lab import accounting
from scaling_lab.data import TokenDataModule
from scaling_lab.data.prepare import TokenCorpus
from scaling_lab.model.config import ModelConfig
from scaling_lab.model.gpt import GPT
from scaling_lab.train.module import GPTModule


def measured_peak_flops(device: str, dtype: torch.dtype, n: int = 4096, reps: int = 20) -> float:
    """Best dense-matmul FLOP/s on this device in the training dtype."""
    if device == "cpu":
        n, reps = 1024, 5
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    for _ in range(3):
        _sync(device)
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - start))
    return best


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def token_corpus(vocab: int, n_tokens: int, where: Path) -> TokenCorpus:
    path = where / "tokens.bin"
    np.random.default_rng(0).integers(0, vocab, n_tokens, dtype=np.uint32).astype(np.uint16 if vocab < 65536
                                                                                  else np.uint32).tofile(path)
    tokens = np.memmap(path, dtype=np.uint16 if vocab < 65536 else np.uint32, mode="r")
    return TokenCorpus(train=tokens, val=tokens[: 64 * 1024], vocab_size=vocab, meta={}, built=True)


class StepTimer(L.Callback):
    """Wall time of the steps after `skip` warm-up steps (compilation, allocator warm-up)."""

    def __init__(self, skip: int):
        self.skip, self.start, self.end = skip, None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.skip:
            _sync(module.device.type)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        _sync(module.device.type)
        self.end = time.perf_counter()


def lightning_tokens_per_s(shape, corpus, args, hp) -> float:
    steps = args.warmup + args.steps
    dm = TokenDataModule(corpus, shape.block_size, args.batch, steps * args.batch * shape.block_size, 0,
                         val_tokens=shape.block_size)
    module = GPTModule(shape, {**hp, "total_steps": steps}, total_steps=steps,
                       flops_per_token=accounting.train_flops_per_token(shape, "6N_attention"))
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                        precision="bf16-mixed" if args.device == "cuda" else "32-true", max_steps=steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0,
                        gradient_clip_val=hp["grad_clip"], callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return args.steps * args.batch * shape.block_size / (timer.end - timer.start)


def bare_tokens_per_s(shape, corpus, args, hp) -> float:
    torch.manual_seed(0)
    model = GPT(shape).to(args.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]),
                                  weight_decay=hp["weight_decay"], fused=args.device == "cuda")
    steps = args.warmup + args.steps
    dm = TokenDataModule(corpus, shape.block_size, args.batch, steps * args.batch * shape.block_size, 0,
                         val_tokens=shape.block_size)
    autocast = torch.autocast(args.device, dtype=torch.bfloat16, enabled=args.device == "cuda")
    for i, (x, y) in enumerate(dm.train_dataloader()):
        if i == args.warmup:
            _sync(args.device)
            start = time.perf_counter()
        x, y = x.to(args.device, non_blocking=True), y.to(args.device, non_blocking=True)
        with autocast:
            loss = model.loss(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(args.device)
    return args.steps * args.batch * shape.block_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="tiny-1,tiny-3,tiny-5", help="comma-separated names from SHAPES")
    parser.add_argument("--batch", type=int, default=16, help="sequences per step")
    parser.add_argument("--block", type=int, default=128, help="context length")
    parser.add_argument("--vocab", type=int, default=257, help="vocabulary size (50304 for the GPU yardstick)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    args = parser.parse_args()

    hp = {"lr": 1e-3, "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "grad_clip": 1.0,
          "warmup_steps": 1, "min_lr_frac": 0.1, "divergence_factor": 1e9, "log_every": 10**9}
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    peak = measured_peak_flops(args.device, dtype)
    print(f"device {args.device}, measured {dtype} matmul peak {peak / 1e12:.3f} TFLOP/s, "
          f"batch {args.batch} x {args.block} tokens, {args.steps} timed steps")
    print(f"{'size':<10} {'params':>11} {'path':<9} {'tokens/s':>12} {'TFLOP/s':>9} {'MFU':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            shape = ModelConfig.resolve(name, vocab_size=args.vocab, block_size=args.block)
            needed = (args.warmup + args.steps) * args.batch * (args.block + 1) + args.block
            corpus = token_corpus(args.vocab, max(needed, 128 * 1024), Path(tmp))
            per_token = accounting.train_flops_per_token(shape, "6N_attention")
            results = {"lightning": lightning_tokens_per_s(shape, corpus, args, hp),
                       "bare": bare_tokens_per_s(shape, corpus, args, hp)}
            for path, tps in results.items():
                flops = tps * per_token
                print(f"{name:<10} {accounting.params_total(shape):>11,} {path:<9} {tps:>12,.0f} "
                      f"{flops / 1e12:>9.4f} {flops / peak:>7.1%}")
            print(f"{name:<10} lightning / bare = {results['lightning'] / results['bare']:.3f}")


if __name__ == "__main__":
    main()
