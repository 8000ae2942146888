"""Training throughput: the real Lightning path against a bare PyTorch loop over the same model and batches.

    python scripts/bench_throughput.py --device cpu --sizes tiny-1,tiny-3,tiny-5
    python scripts/bench_throughput.py --device cuda --vocab 50304 --block 1024 --batch 64 \\
        --sizes gpt-7m,gpt-16m,gpt-30m,gpt-51m,gpt-124m,gpt-253m --json

Both paths do the same work per optimizer step: the same compiled loss (train.compile / compile_mode), the fused
output layer + cross-entropy (--loss-chunk-rows), the same micro-batches (the Lightning module's choice, `auto` by
default), bf16 autocast on CUDA, global-norm clipping, fused AdamW with the project's parameter groups, the LR
scheduler, a host sync every --log-every steps, and the same pinned batches read from a token file on disk
(uniform random ids) through TokenDataModule and the resumable batch stream the trainer uses.

One line per size: tokens/s, TFLOP/s and MFU of each path, Lightning / bare, and for the gpt-* sizes at the issue's
yardstick shapes, Lightning / nanoGPT's measured tokens/s. FLOPs per token follow the `6N_attention` convention
(6N + 12 L d T, PaLM App. B), as nanoGPT's MFU does; the peak is measured here (dense matmuls in the training dtype),
not taken from a spec sheet. --json adds one JSON object per size; scripts/throughput_table.py turns those into the
README's Markdown table.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import platform
import tempfile
import time
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import torch
from omegaconf import OmegaConf

from scaling_lab import accounting
from scaling_lab.conf_dir import CONF_DIR
from scaling_lab.data import TokenDataModule
from scaling_lab.data.prepare import TokenCorpus
from scaling_lab.model import mup
from scaling_lab.model.config import ModelConfig
from scaling_lab.model.gpt import GPT
from scaling_lab.train import device as devices
from scaling_lab.train.checkpoint import ResumableBatches
from scaling_lab.train.module import GPTModule, compile_enabled, own_grads
from scaling_lab.train.schedule import multiplier

warnings.filterwarnings("ignore", message=".*no `val_dataloader`.*")  # the benchmark trains only
# the Lightning and the bare path compile the same loss for each size; past dynamo's default of 8 compilations of one
# function it would silently run the rest eagerly and time that
torch._dynamo.config.recompile_limit = 64

# nanoGPT + torch.compile + bf16 autocast + fused AdamW on one H100 80GB, vocabulary 50,304, context 1,024,
# 64 sequences per step (issue 5's table): tokens/s to compare against at exactly that shape
YARDSTICK = {"gpt-7m": 2_855_000, "gpt-16m": 2_232_000, "gpt-30m": 1_492_000, "gpt-51m": 1_029_000,
             "gpt-124m": 498_000, "gpt-253m": 280_000}
YARDSTICK_SHAPE = {"vocab": 50304, "block": 1024, "batch": 64}


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


def release_compiled(device: str) -> None:
    """Drop the previous size's compiled code and CUDA-graph memory pools, so that this size's `auto` micro-batch sees
    the whole device free, as a fresh training process would."""
    gc.collect()
    torch._dynamo.reset()
    if device == "cuda":
        torch.cuda.empty_cache()


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def token_corpus(vocab: int, n_tokens: int, where: Path) -> TokenCorpus:
    dtype = np.uint16 if vocab < 65536 else np.uint32
    path = where / "tokens.bin"
    np.random.default_rng(0).integers(0, vocab, n_tokens).astype(dtype).tofile(path)
    tokens = np.memmap(path, dtype=dtype, mode="r")
    return TokenCorpus(train=tokens, val=tokens[: 64 * 1024], vocab_size=vocab, meta={}, built=True)


def batches(shape, corpus, args) -> ResumableBatches:
    steps = args.warmup + args.steps
    dm = TokenDataModule(corpus, shape.block_size, args.batch, steps * args.batch * shape.block_size, 0,
                         val_tokens=shape.block_size)
    return ResumableBatches(dm.train_dataloader().dataset, pin=args.device == "cuda")


class StepTimer(L.Callback):
    """Wall time of the steps after `skip` warm-up steps (compilation, CUDA-graph capture, allocator warm-up)."""

    def __init__(self, skip: int):
        self.skip, self.start, self.end = skip, None, None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == self.skip:
            _sync(module.device.type)
            self.start = time.perf_counter()

    def on_train_end(self, trainer, module):
        _sync(module.device.type)
        self.end = time.perf_counter()


def lightning_run(shape, corpus, args, hp) -> tuple[float, int]:
    """(tokens/s, micro-batch size) through Trainer + GPTModule."""
    steps = args.warmup + args.steps
    module = GPTModule(shape, {**hp, "total_steps": steps}, total_steps=steps,
                       flops_per_token=accounting.train_flops_per_token(shape, "6N_attention"))
    timer = StepTimer(args.warmup)
    trainer = L.Trainer(accelerator="gpu" if args.device == "cuda" else "cpu", devices=1,
                        precision=hp["precision"], max_steps=steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(module, train_dataloaders=batches(shape, corpus, args))
    return args.steps * args.batch * shape.block_size / (timer.end - timer.start), module.micro_batch_size


def bare_run(shape, corpus, args, hp, micro: int) -> float:
    """tokens/s of a hand-written loop doing the same optimizer steps."""
    torch.manual_seed(0)
    device, steps = torch.device(args.device), args.warmup + args.steps
    model = GPT(shape).to(device)
    optimizer = torch.optim.AdamW(mup.param_groups(shape, model.named_parameters(), hp["lr"], hp["weight_decay"]),
                                  lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"],
                                  fused=device.type == "cuda")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier({**hp, "total_steps": steps}))
    loss_fn = model.loss
    if compile_enabled(hp["compile"], device):
        loss_fn = torch.compile(model.loss, mode=hp["compile_mode"], dynamic=False)
    autocast_dtype = devices.AUTOCAST.get(hp["precision"])  # what Lightning's precision plugin autocasts to
    autocast = torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None)
    for i, (x, y) in enumerate(batches(shape, corpus, args)):
        if i == args.warmup:
            _sync(args.device)
            start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        total = torch.zeros((), device=device)
        parts = list(zip(x.split(micro), y.split(micro)))
        if len(parts) > 1:
            own_grads(model.parameters())
        for xm, ym in parts:
            with autocast:
                loss = loss_fn(xm, ym, chunk_rows=hp["loss_chunk_rows"]) * (ym.numel() / y.numel())
            loss.backward()
            total += loss.detach()
        if i % hp["log_every"] == 0:
            total.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), hp["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
    _sync(args.device)
    return args.steps * args.batch * shape.block_size / (time.perf_counter() - start)


def _optional_int(text: str) -> int | str | None:
    return None if text == "none" else "auto" if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    parser.add_argument("--sizes", default="tiny-1,tiny-3,tiny-5", help="comma-separated names from SHAPES")
    parser.add_argument("--batch", type=int, default=16, help="sequences per optimizer step")
    parser.add_argument("--block", type=int, default=128, help="context length")
    parser.add_argument("--vocab", type=int, default=257, help="vocabulary size (50304 for the GPU yardstick)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--compile", default="auto", choices=["auto", "true", "false"], help="train.compile")
    parser.add_argument("--compile-mode", default="default", help="train.compile_mode, e.g. reduce-overhead")
    parser.add_argument("--loss-chunk-rows", type=_optional_int, default=4096, help="train.loss_chunk_rows; none")
    parser.add_argument("--micro-batch", type=_optional_int, default="auto", help="train.micro_batch_size; none")
    parser.add_argument("--log-every", type=int, default=10, help="steps between host syncs, in both paths")
    parser.add_argument("--json", action="store_true", help="also one JSON object per size")
    args = parser.parse_args()

    # the shipped training defaults (conf/train/default.yaml), then what this benchmark fixes
    hp = {**OmegaConf.to_container(OmegaConf.load(CONF_DIR / "train" / "default.yaml")),
          "lr": 1e-3, "warmup_steps": 1, "divergence_factor": 1e9, "log_every": args.log_every,
          "batch_size": args.batch, "compile": {"true": True, "false": False}.get(args.compile, "auto"),
          "compile_mode": args.compile_mode, "loss_chunk_rows": args.loss_chunk_rows,
          "micro_batch_size": args.micro_batch}
    hp["precision"] = devices.precision(hp["precision"], "gpu" if args.device == "cuda" else "cpu")
    dtype = devices.AUTOCAST.get(hp["precision"], torch.float32)
    peak = measured_peak_flops(args.device, dtype)
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    print(f"device {args.device} ({device_name}), torch "
          f"{torch.__version__}, measured {dtype} matmul peak {peak / 1e12:.3f} TFLOP/s, batch {args.batch} x "
          f"{args.block} tokens, vocab {args.vocab}, {args.steps} timed steps, compile={args.compile} "
          f"mode={args.compile_mode}, loss_chunk_rows={args.loss_chunk_rows}", flush=True)
    print(f"{'size':<10} {'params':>12} {'path':<9} {'tokens/s':>12} {'TFLOP/s':>9} {'MFU':>7} {'micro':>5}")
    at_yardstick = {"vocab": args.vocab, "block": args.block, "batch": args.batch} == YARDSTICK_SHAPE
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sizes.split(","):
            shape = ModelConfig.resolve(name, vocab_size=args.vocab, block_size=args.block)
            needed = (args.warmup + args.steps) * args.batch * (args.block + 1) + args.block
            corpus = token_corpus(args.vocab, max(needed, 128 * 1024), Path(tmp))
            per_token = accounting.train_flops_per_token(shape, "6N_attention")
            release_compiled(args.device)
            lightning, micro = lightning_run(shape, corpus, args, hp)
            results = {"lightning": lightning, "bare": bare_run(shape, corpus, args, hp, micro)}
            row = {"size": name, "params": accounting.params_total(shape), "micro_batch": micro,
                   "lightning_over_bare": results["lightning"] / results["bare"]}
            for path, tps in results.items():
                flops = tps * per_token
                row |= {f"{path}_tokens_per_s": tps, f"{path}_tflops": flops / 1e12, f"{path}_mfu": flops / peak}
                print(f"{name:<10} {row['params']:>12,} {path:<9} {tps:>12,.0f} {flops / 1e12:>9.4f} "
                      f"{flops / peak:>7.1%} {micro:>5}")
            line = f"{name:<10} lightning / bare = {row['lightning_over_bare']:.3f}"
            if at_yardstick and name in YARDSTICK:
                row["yardstick_tokens_per_s"] = YARDSTICK[name]
                row["lightning_over_yardstick"] = results["lightning"] / YARDSTICK[name]
                line += f", lightning / nanoGPT yardstick = {row['lightning_over_yardstick']:.3f}"
            print(line, flush=True)
            if args.json:
                settings = {k: v for k, v in vars(args).items() if k not in ("sizes", "json")}
                print(json.dumps({**row, "device": args.device, "device_name": device_name, "torch": torch.__version__,
                                  "date": time.strftime("%Y-%m-%d", time.gmtime()), "peak_tflops": peak / 1e12,
                                  "settings": settings}), flush=True)
            if not math.isfinite(row["lightning_over_bare"]):
                raise SystemExit(f"{name}: no finite throughput")


if __name__ == "__main__":
    main()
