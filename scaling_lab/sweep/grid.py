"""Expands a sweep preset into its runs, exactly as Hydra's basic sweeper will, and checks every one up front."""

from __future__ import annotations

from hydra import compose
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from scaling_lab import layout, provenance, records
from scaling_lab.train.run import RunSpec, schedule_steps


def expand(config_name: str, overrides: list[str]) -> list[list[str]]:
    """The per-job override lists of a multirun: the preset's hydra.sweeper.params x the command line's."""
    cfg = compose(config_name, overrides=fixed(overrides), return_hydra_config=True)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + overrides)
    return BasicSweeper.split_arguments(parsed, None)[0]


def preset(config_name: str, overrides: list[str]) -> tuple[dict, DictConfig]:
    """The config every job shares (the command line without its sweep overrides a,b,c), resolved, and the
    multirun's hydra.launcher node (left unresolved: it may interpolate the preset's trainer.* and Hydra's own
    runtime values)."""
    cfg = compose(config_name, overrides=fixed(overrides), return_hydra_config=True)
    shared = OmegaConf.masked_copy(cfg, [key for key in cfg if key != "hydra"])
    return OmegaConf.to_container(shared, resolve=True), cfg.hydra.launcher


def override_key(override: str) -> str:
    """The config key an override sets: `key=v`, `+key=v` (add) and `~key` (delete) alike."""
    return override.split("=", 1)[0].lstrip("+~")


def fixed(overrides: list[str]) -> list[str]:
    """The command line without its sweep overrides (a,b,c), enough to read the preset."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    return [o.input_line for o in parsed if not o.is_sweep_override()]


def jobs(config_name: str, overrides: list[str]) -> list[tuple[list[str], DictConfig, RunSpec]]:
    """Every job of the multirun in launch order: its overrides, its composed config and its checked RunSpec."""
    out = []
    for job in expand(config_name, overrides):
        cfg = compose(config_name, overrides=job)
        out.append((job, cfg, RunSpec.from_config(cfg)))
    return out


def plan(jobs: list[tuple[list[str], DictConfig, RunSpec]], vocab_size: int) -> tuple[str | None, str, list[dict]]:
    """(sweep name, results dir, one manifest entry per distinct run) after checking every job's schedule on a
    corpus of this vocabulary."""
    runs: dict[str, dict] = {}
    name = results_dir = None
    for job, cfg, spec in jobs:
        schedule_steps(spec, vocab_size)
        name, results_dir = spec.sweep, str(spec.results_dir)
        runs.setdefault(spec.run_id, {"run_id": spec.run_id, "overrides": job,
                                      "model": OmegaConf.to_container(cfg.model), "tokens": spec.train["tokens"],
                                      "lr": spec.train["lr"], "batch_size": spec.train["batch_size"]})
    return name, results_dir, list(runs.values())


def write_manifest(name: str | None, results_dir: str, runs: list[dict]) -> None:
    """Record what the sweep is meant to contain, so `status` can tell pending from missing."""
    records.write_atomic(layout.sweep_manifest(results_dir),
                         {"sweep": name, "launched_at": provenance.utc_now(), "runs": runs})
