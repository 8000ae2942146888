"""`scaling-lab sweep sweep=NAME plan=true`: what a sweep will cost, before it spends anything.

One row per planned run (shape, N, D, C, tokens/param, epochs over the corpus, batch x steps), the total compute
and an estimated wall time from a short throughput probe of each shape on the detected device. Tokens, batch and
steps come from the same TokenDataModule and hparams rule that training uses, so C here is what the records get.
"""

from __future__ import annotations

import heapq
import statistics
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from scaling_lab import accounting
from scaling_lab.data import TokenCorpus, TokenDataModule
from scaling_lab.model import mup
from scaling_lab.model.config import ModelConfig
from scaling_lab.model.gpt import GPT
from scaling_lab.model.sizing import label
from scaling_lab.sweep import branch
from scaling_lab.sweep.designs import Design, optimal_params
from scaling_lab.train import device, hparams
from scaling_lab.train.branching import eval_passes
from scaling_lab.train.run import ConfigError

ISOFLOP_TOLERANCE = 0.01  # a budget's runs must spend the same compute to within 1%
# cap on the tokens of one probe step, so that probing a large model stays short; a CPU's tokens/s barely depends on
# the batch once a step has a few thousand tokens, a GPU's needs more to fill it
PROBE_TOKENS = {"cuda": 8192, "cpu": 2048}
WARMUP_STEPS = 5  # allocator, kernel selection and AdamW state settle over the first steps


@dataclass(frozen=True)
class Row:
    run_id: str
    shape: ModelConfig
    tokens: int  # as trained: the requested budget in whole sequences
    batch_size: int
    wanted_batch: float  # sequences per step the config or rule asked for, before capping at the run's length
    steps: int
    epochs: float
    flops: float  # under the plan's convention
    record_flops: float  # under accounting.DEFAULT_CONVENTION, the record's `flops`
    eval_tokens: int  # validation tokens over all evaluation passes
    repetition: str | None  # the data module's warning when the run repeats its data more than MAX_EPOCHS
    budget: float | None

    @property
    def params(self) -> int:
        return accounting.params_total(self.shape)


def report(cfg: Mapping[str, Any], entries: list[dict], corpus: TokenCorpus, design: Design | None,
           concurrent_jobs: int) -> str:
    """The planner's whole output for a composed config (as a container), its manifest entries in launch order and
    how many of its jobs the launcher runs at once."""
    convention = design.convention if design else accounting.DEFAULT_CONVENTION
    table = rows(entries, corpus, cfg["train"], cfg["data"]["val_tokens"], convention)
    branched = bool(cfg["sweep"].get("branch"))
    jobs = branch.jobs(entries, table, cfg["train"]["cooldown_frac"]) if branched else [{r.run_id: r.tokens}
                                                                                          for r in table]
    trained = {run_id: tokens for job in jobs for run_id, tokens in job.items()}
    try:
        accelerator = device.accelerator(cfg["accelerator"])
    except ConfigError:  # gpu under a cluster launcher (launch.prepare stops local ones): the GPUs are on the nodes
        seconds, timing = None, ("estimated wall time: none, accelerator=gpu and this machine has no GPU to probe "
                                 "(run plan=true on a GPU node for one)")
    else:
        where = device.torch_device(accelerator)
        seconds = estimate_seconds(table, trained, where, device.precision(cfg["train"]["precision"], accelerator))
        timing = wall_time(jobs, seconds, concurrent_jobs, describe(where))
    lines = [render(table, seconds, convention)]
    if branched:
        total, independent = sum(trained.values()), sum(r.tokens for r in table)
        lines.append(f"sweep.branch: {len(jobs)} trunks + cooldowns train {total:,} tokens, "
                     f"{total / independent:.2f}x the {independent:,} of independent runs (a branch's est. is its "
                     "cooldown)")
    lines.append(timing)
    return "\n".join(lines + [f"warning: {n}" for n in warnings(table, design)])


def rows(entries: list[dict], corpus: TokenCorpus, train: Mapping[str, Any], val_tokens: int,
         convention: str) -> list[Row]:
    out = []
    for e in entries:
        shape = ModelConfig.from_config(e["model"], corpus.vocab_size)
        tokens = int(e["tokens"])
        _, batch, _ = hparams.resolve(shape, tokens, e["lr"], e["batch_size"], train["lr_rule"])
        dm = TokenDataModule(corpus, shape.block_size, batch, tokens, seed=0, val_tokens=val_tokens)
        wanted = e["batch_size"] or hparams.rule_batch(shape, tokens)
        out.append(Row(e["run_id"], shape, dm.tokens_trained, batch, wanted, dm.steps, dm.epochs,
                       accounting.train_flops(shape, dm.tokens_trained, convention),
                       accounting.train_flops(shape, dm.tokens_trained),
                       eval_passes(dm.steps, train["eval_points"]) * dm.val_tokens_used, dm.repetition_warning,
                       e.get("budget")))
    return out


def warnings(table: list[Row], design: Design | None) -> list[str]:
    notes = []
    for r in table:
        if r.repetition:
            notes.append(f"{r.run_id}: {r.repetition}")
        if r.tokens < r.wanted_batch * r.shape.block_size:
            notes.append(f"{r.run_id}: {r.tokens} tokens are less than one optimizer step of "
                         f"{r.wanted_batch:.0f} sequences; the run is one partial step")
    if design is not None and design.kind == "isoflop":
        by_budget = defaultdict(list)
        for r in table:
            by_budget[r.budget].append(r)
        for budget, runs in by_budget.items():
            notes += _budget_warnings(design, budget, runs)
    return notes


def _budget_warnings(design: Design, budget: float, runs: list[Row]) -> list[str]:
    notes = []
    sizes = sorted({r.params for r in runs})
    n_opt = optimal_params(design, budget)
    if len(sizes) < 3:
        notes.append(f"budget C={budget:.3g}: only {len(sizes)} distinct sizes; a minimum needs 3 or more "
                     "(raise sweep.design.span or the budget)")
    if not sizes[0] < n_opt < sizes[-1]:
        notes.append(f"budget C={budget:.3g}: sizes {sizes[0]:,}..{sizes[-1]:,} cannot bracket the expected "
                     f"optimum N~{n_opt:,.0f}")
    spread = max(r.flops for r in runs) / min(r.flops for r in runs) - 1
    if spread > ISOFLOP_TOLERANCE:
        notes.append(f"budget C={budget:.3g}: whole-sequence rounding spreads its compute by {spread:.1%} "
                     f"(> {ISOFLOP_TOLERANCE:.0%}); raise the budget")
    return notes


def probe(shape: ModelConfig, batch_size: int, where: torch.device, precision: str, seconds: float = 0.3) -> float:
    """Training tokens per second of this shape on this device at this Lightning precision: after a few warm-up
    steps (the first ones run many times slower), AdamW steps on random tokens for about `seconds` (at least 3, at
    most 100), timed one by one; the median step is the typical speed, robust to a few stalls."""
    micro = max(1, min(batch_size, PROBE_TOKENS[where.type] // shape.block_size))
    model = GPT(shape).to(where)
    optimizer = torch.optim.AdamW(mup.param_groups(shape, model.named_parameters(), 1e-4, 0.1), lr=1e-4)
    x = torch.randint(shape.vocab_size, (micro, shape.block_size), device=where)
    autocast = device.AUTOCAST.get(precision)

    def step():
        with torch.autocast(where.type, dtype=autocast, enabled=autocast is not None):
            loss = model.loss(x, x)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(WARMUP_STEPS):
        step()
    times: list[float] = []
    while len(times) < 3 or (sum(times) < seconds and len(times) < 100):
        start = time.perf_counter()
        step()
        if where.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return micro * shape.block_size / statistics.median(times)


def estimate_seconds(table: list[Row], trained: dict[str, int], where: torch.device,
                     precision: str) -> dict[str, float]:
    """Per run: the tokens it trains itself at the probed rate, plus its evaluation (a forward pass, ~1/3 of a
    training step: backward ~ 2x forward, Kaplan et al. 2020, Sec. 2.1; a branch's passes before its cooldown run in
    its trunk, in the same job)."""
    rates: dict[tuple[ModelConfig, int], float] = {}
    out = {}
    for r in table:
        key = (r.shape, r.batch_size)
        if key not in rates:
            rates[key] = probe(r.shape, r.batch_size, where, precision)
        out[r.run_id] = (trained[r.run_id] + r.eval_tokens / 3) / rates[key]
    return out


def makespan(job_seconds: list[float], slots: int) -> float:
    """Wall time of jobs started in launch order, each in the first slot to come free, as the packed launcher
    starts them (greedy list scheduling)."""
    ends = [0.0] * slots
    for s in job_seconds:
        heapq.heappush(ends, heapq.heappop(ends) + s)
    return max(ends)


def wall_time(jobs: list[dict[str, int]], seconds: dict[str, float], slots: int, device_name: str) -> str:
    job_seconds = [sum(seconds[run_id] for run_id in job) for job in jobs]
    serial = _duration(sum(job_seconds))
    caveat = "probed median step; Lightning's per-step overhead and per-run start-up not included"
    if slots == 1:
        return (f"estimated wall time on {device_name}: {serial} of training and evaluation, {len(jobs)} jobs one "
                f"after another ({caveat})")
    # every shape is probed alone: how much runs sharing a device slow each other is not measured, so both ends
    return (f"estimated wall time on {device_name}: {_duration(makespan(job_seconds, slots))} (hydra/launcher=packed: "
            f"{len(jobs)} jobs, at most {slots} at a time, each at its speed alone) to {serial} (one after another) of "
            f"training and evaluation ({caveat})")


def render(table: list[Row], seconds: dict[str, float] | None, convention: str) -> str:
    header = (f"{'run':<34} {'budget C':>9} {'shape':<14} {'N':>11} {'D':>11} {'C':>9} {'D/N':>7} "
              f"{'epochs':>7} {'batch x steps':>14} {'est.':>7}")
    lines = [header, "-" * len(header)]
    for r in table:
        budget = f"{r.budget:.3g}" if r.budget else "-"
        lines.append(f"{r.run_id:<34} {budget:>9} {label(r.shape):<14} {r.params:>11,} {r.tokens:>11,} "
                     f"{r.flops:>9.3g} {r.tokens / r.params:>7.1f} {r.epochs:>7.3f} "
                     f"{f'{r.batch_size} x {r.steps}':>14} {_duration(seconds[r.run_id]) if seconds else '-':>7}")
    total = sum(r.flops for r in table)
    record_total = sum(r.record_flops for r in table)
    lines += ["-" * len(header),
              f"{len(table)} runs, {sum(r.tokens for r in table):,} tokens, C = {total:.4g} FLOPs ({convention})"
              + ("" if convention == accounting.DEFAULT_CONVENTION else
                 f" = {record_total:.4g} FLOPs ({accounting.DEFAULT_CONVENTION}, as the records count it)")]
    return "\n".join(lines)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h" if seconds < 48 * 3600 else f"{seconds / 86400:.1f}d"


def describe(where: torch.device) -> str:
    if where.type == "cuda":
        return torch.cuda.get_device_name(where)
    return f"CPU ({torch.get_num_threads()} threads)"

