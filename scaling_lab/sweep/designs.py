"""Sweep designs beyond a grid: IsoFLOP profiles and model ladders, as lists of ordinary (shape, tokens) runs.

A preset with a `sweep.design` block (conf/sweep/isoflop_local.yaml, ladder_local.yaml) is expanded here into
planned runs. Hydra's basic sweeper only makes Cartesian products, so each planned run becomes an option of the
config group `design_run` in Hydra's ConfigStore (model shape + train.tokens, package _global_), named by shape
and tokens (L1-D16-H4-53888), and the sweep multiruns over `+design_run=<name>,<name>,...`. Every job composes like
any other, gets the same RunSpec and run id as `scaling-lab train` with the same values, and works with any
launcher (the ConfigStore travels with Hydra's singleton state to submitit jobs). Further sweep overrides
(train.lr=a,b,c) still multiply the design.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

from scaling_lab import accounting, layout
from scaling_lab.model.config import SHAPES, ModelConfig
from scaling_lab.model.sizing import ASPECT_RATIO, HEAD_DIM, label, shape_for_params
from scaling_lab.sweep.grid import override_key
from scaling_lab.train.run import ConfigError, check_count, check_interval

GROUP = "design_run"
KINDS = ("isoflop", "ladder")
DESIGNED_KEYS = ("model.name", "model.n_layer", "model.d_model", "model.n_head", "train.tokens")


@dataclass(frozen=True)
class Planned:
    """One run of a design: its shape, its data budget in tokens, and where it came from."""

    shape: ModelConfig
    tokens: int
    budget: float | None = None  # IsoFLOP compute budget C (under the design's FLOP convention)
    target: float | None = None  # the N asked for; the shape's exact N is accounting.params_total(shape)

    def node(self) -> dict:
        """The config this run sets on top of the preset: model shape and train.tokens."""
        s = self.shape
        model = {"name": s.name} if s.name else {"name": None, "n_layer": s.n_layer, "d_model": s.d_model,
                                                  "n_head": s.n_head}
        return {"model": model, "train": {"tokens": self.tokens}}


@dataclass(frozen=True)
class Design:
    """A checked `sweep.design` block: how to size models and count compute, plus the runs it plans."""

    kind: str
    spec: Mapping[str, Any]
    convention: str
    step: float  # ratio between neighbouring sizes of an IsoFLOP budget (edge extension continues it)
    shape_for: Callable[[float], ModelConfig]
    block_size: int

    def runs(self, vocab_size: int) -> list[Planned]:
        return _isoflop(self) if self.kind == "isoflop" else _ladder(self, vocab_size)

    def tokens_for_budget(self, shape: ModelConfig, budget: float) -> int:
        """D = C / (FLOPs per token), in whole sequences, so every size of a budget spends the same compute."""
        flops_per_token = accounting.train_flops_per_token(shape, self.convention)
        return self.block_size * round(budget / flops_per_token / self.block_size)


def register(runs: list[Planned]) -> tuple[list[str], dict[str, Planned]]:
    """Put the runs into Hydra's ConfigStore; return the sweep override that launches them and the runs by name."""
    by_name = {f"{label(run.shape)}-{run.tokens}": run for run in runs}
    for name, run in by_name.items():
        ConfigStore.instance().store(group=GROUP, name=name, node=run.node(), package="_global_")
    return [f"+{GROUP}={','.join(by_name)}"], by_name


def annotate(entries: list[dict], by_name: Mapping[str, Planned]) -> list[dict]:
    """Add budget, target N and exact N to the manifest entries of design runs (the planner and extend read them)."""
    for entry in entries:
        chosen = [o.split("=", 1)[1] for o in entry["overrides"] if o.startswith(f"+{GROUP}=")]
        if chosen:
            run = by_name[chosen[0]]
            entry.update(budget=run.budget, target_params=run.target, params=accounting.params_total(run.shape))
    return entries


def from_config(cfg: Mapping[str, Any], vocab_size: int) -> Design | None:
    """The design a composed config asks for (`sweep.design`), checked; None for a plain grid preset."""
    spec = (cfg.get("sweep") or {}).get("design")
    if not spec:
        return None
    kind = spec.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"sweep.design.kind={kind!r} is not one of {KINDS}")
    convention = spec.get("flops_convention", accounting.DEFAULT_CONVENTION)
    if convention not in accounting.CONVENTIONS:
        raise ConfigError(f"sweep.design.flops_convention={convention!r} is not one of {accounting.CONVENTIONS}")
    block_size = cfg["model"]["block_size"]
    rule = {"aspect_ratio": spec.get("aspect_ratio", ASPECT_RATIO), "head_dim": spec.get("head_dim", HEAD_DIM)}

    def shape_for(target: float) -> ModelConfig:
        return shape_for_params(target, vocab_size, block_size, **rule)

    shape_for(1.0)  # a bad shape rule fails here, naming its keys
    step = 1.0
    if kind == "isoflop":
        sizes = spec.get("sizes_per_budget")
        check_count("sweep.design.sizes_per_budget", sizes)
        span = check_interval("sweep.design.span", spec.get("span"), "[1, inf)" if sizes == 1 else "(1, inf)")
        step = span ** (1 / (sizes - 1)) if sizes > 1 else span
    return Design(kind, spec, convention, step, shape_for, block_size)


def optimal_params(design: Design, budget: float) -> float:
    """The prior compute-optimal N for budget C: an earlier fit's N_opt(C), else D/N = tokens_per_param.

    C = k N D, k = FLOPs per token per parameter under the design's convention (6 for 6N, Hoffmann et al. 2022).
    With D = r N, N = sqrt(C / (k r)). An earlier fit's law N_opt = G (C'/6)^a is stated for C' = 6 N D (the fit's
    allocation, Hoffmann et al. 2022 Eq. 4), i.e. C' = 6 C / k: N = G (C / k)^a. k depends on the shape, so both
    iterate a few times from k = 6.
    """
    n_opt = design.spec.get("n_opt")
    if n_opt and not isinstance(n_opt, str):  # typed in as N_opt = G * C^a, C under the design's convention
        exponent = check_interval("sweep.design.n_opt.exponent", n_opt.get("exponent"), "(-inf, inf)")
        coefficient = check_interval("sweep.design.n_opt.coefficient", n_opt.get("coefficient"), "(0, inf)")
        return coefficient * budget**exponent
    if n_opt:
        exponent, coefficient = fitted_law(n_opt)

        def law(k: float) -> float:
            return coefficient * (budget / k) ** exponent
    else:
        ratio = check_interval("sweep.design.tokens_per_param", design.spec.get("tokens_per_param"), "(0, inf)")

        def law(k: float) -> float:
            return math.sqrt(budget / (k * ratio))

    n = law(6.0)
    for _ in range(4):
        shape = design.shape_for(n)
        n = law(accounting.train_flops_per_token(shape, design.convention) / accounting.params_total(shape))
    return n


def fitted_law(source: str) -> tuple[float, float]:
    """(a, G) of N_opt = G (C/6)^a from an earlier fit: a fit.json, its fit output directory or a results directory."""
    path = Path(source)
    for candidate in (path, layout.fit_numbers(path), layout.fit_numbers(layout.fit_dir(path))):
        if candidate.is_file():
            break
    else:
        raise ConfigError(f"sweep.design.n_opt={source}: no fit.json there (run `scaling-lab fit` on it first)")
    try:
        law = json.loads(candidate.read_text())["compute_optimal"]
        exponent, coefficient = float(law["a"]), float(law["G"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"sweep.design.n_opt={source}: {candidate} has no compute_optimal a and G ({e})") from e
    if not (math.isfinite(exponent) and math.isfinite(coefficient) and coefficient > 0):
        raise ConfigError(f"sweep.design.n_opt={source}: the fit's compute_optimal law (a={exponent}, G={coefficient}) "
                          "is not usable")
    return exponent, coefficient


def _isoflop(design: Design) -> list[Planned]:
    spec, sizes = design.spec, design.spec["sizes_per_budget"]
    budgets = spec.get("budgets")
    if not budgets:
        raise ConfigError("sweep.design.budgets is empty: give at least one compute budget in FLOPs")
    runs = []
    for budget in budgets:
        if not isinstance(budget, (int, float)) or budget <= 0:
            raise ConfigError(f"sweep.design.budgets: {budget!r} is not a positive number of FLOPs")
        centre = optimal_params(design, budget)
        targets = [centre * design.step ** (i - (sizes - 1) / 2) for i in range(sizes)]
        runs += budget_runs(design, budget, targets, known=set())
    return runs


def budget_runs(design: Design, budget: float, targets: list[float], known: set[int]) -> list[Planned]:
    """One run per distinct size (exact N not already in `known`) for these target N at compute budget C."""
    runs = []
    for target in targets:
        shape = design.shape_for(target)
        if accounting.params_total(shape) in known:
            continue
        known.add(accounting.params_total(shape))
        tokens = design.tokens_for_budget(shape, budget)
        if tokens < design.block_size:
            raise ConfigError(
                f"sweep.design.budgets: C={budget:.3g} leaves N={accounting.params_total(shape)} "
                f"({shape.n_layer} layers x {shape.d_model}) under one sequence of model.block_size="
                f"{design.block_size} tokens; raise the budget or lower the sizes")
        runs.append(Planned(shape, tokens, budget=float(budget), target=target))
    return runs


def _ladder(design: Design, vocab_size: int) -> list[Planned]:
    spec = design.spec
    sizes, multiples = spec.get("sizes"), spec.get("multiples")
    if not sizes:
        raise ConfigError("sweep.design.sizes is empty: give target parameter counts or names from SHAPES")
    if not multiples or any(not isinstance(m, (int, float)) or m <= 0 for m in multiples):
        raise ConfigError(f"sweep.design.multiples must be positive multiples of tokens_per_param, got {multiples!r}")
    ratio = check_interval("sweep.design.tokens_per_param", spec.get("tokens_per_param"), "(0, inf)")
    runs = []
    for size in sizes:
        if isinstance(size, str):
            if size not in SHAPES:
                raise ConfigError(f"sweep.design.sizes: {size!r} is not a known shape; known: {', '.join(SHAPES)}")
            shape, target = ModelConfig.resolve(size, vocab_size=vocab_size, block_size=design.block_size), None
        elif isinstance(size, (int, float)) and size > 0:
            shape, target = design.shape_for(size), float(size)
        else:
            raise ConfigError(f"sweep.design.sizes: {size!r} is neither a positive N nor a shape name")
        n = accounting.params_total(shape)
        for m in multiples:
            tokens = design.block_size * round(m * ratio * n / design.block_size)
            if tokens < design.block_size:
                raise ConfigError(f"sweep.design.multiples: {m} x {ratio:g} tokens/param for N={n} is under one "
                                  f"sequence of model.block_size={design.block_size} tokens")
            runs.append(Planned(shape, tokens, target=target))
    return runs


def check_overrides(overrides: list[str]) -> None:
    """A design sets every run's shape and tokens; a command line that also sets them would silently win."""
    for override in overrides:
        key = override_key(override)
        if key in DESIGNED_KEYS or (key.startswith("model.") and "," in override.split("=", 1)[-1]):
            raise ConfigError(f"{key}: a sweep.design preset sets each run's shape and train.tokens; "
                              "change sweep.design.* instead")
