"""`scaling-lab STAGE [key=value ...]`: the pipeline's command line. Hydra overrides follow the stage name.

  train   one run                               scaling-lab train model.name=tiny-3 train.tokens=1e6
  sweep   a preset's grid, then fit + report    scaling-lab sweep sweep=local_small [hydra/launcher=submitit_local]
  fit     fit a results dir, CSV or W&B project scaling-lab fit input=results/local_small output_dir=out
  status  completed / failed / pending runs     scaling-lab status results_dir=results/local_small
  schema  the run-record fields as Markdown     scaling-lab schema
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from scaling_lab.conf_dir import CONF_DIR

log = logging.getLogger("scaling_lab")


class UsageError(ValueError):
    pass


def _user_errors() -> tuple[type[BaseException], ...]:
    from scaling_lab.data import DataConfigError
    from scaling_lab.fit import FitInputError
    from scaling_lab.model.config import ShapeError
    from scaling_lab.records import RecordError
    from scaling_lab.tracking import LoggerConfigError
    from scaling_lab.train.run import ConfigError

    return (UsageError, ConfigError, ShapeError, DataConfigError, FitInputError, RecordError, LoggerConfigError,
            HydraException, OmegaConfBaseException, FileNotFoundError, PermissionError)


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name, overrides=overrides)


def _hydra_main(task, args: list[str]) -> None:
    from scaling_lab.sweep import packed

    packed.register()  # hydra/launcher=packed
    sys.argv = ["scaling-lab", *args]
    hydra.main(config_path=str(CONF_DIR), config_name="main", version_base="1.3")(task)()


def _train_task(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from scaling_lab.claim import Busy
    from scaling_lab.sweep.branch import train_group
    from scaling_lab.train.run import RunSpec, train

    try:
        if OmegaConf.select(cfg, "sweep.branch_tokens"):  # a branched sweep's job: a trunk and its branches
            train_group(cfg)
        else:
            train(RunSpec.from_config(cfg))
    except SIGTERMException:
        # the run saved a checkpoint and stopped unfinished; Lightning's exception (a SystemExit) would exit 0, so a
        # wrapper or a sweep would take it for success: exit as a SIGTERM'd process does, 128 + 15
        raise SystemExit(128 + signal.SIGTERM) from None
    except Exception as e:
        if HydraConfig.get().mode != RunMode.MULTIRUN:
            raise
        if isinstance(e, Busy):  # a racing launch is training it and will write its record
            log.warning("%s; this launch skips it", e)
            return
        # one broken run must not stop a sweep: its record says what happened, `status` shows it
        log.error("run failed, sweep continues: %s: %s", type(e).__name__, e)


def train_cmd(overrides: list[str]) -> int:
    from scaling_lab import claim, layout
    from scaling_lab.data import prepare_corpus
    from scaling_lab.train import device
    from scaling_lab.train.run import RunSpec, schedule_steps

    if any(arg.startswith("-") for arg in overrides):  # Hydra's own flags (--cfg job, --help, --info) print and exit
        _hydra_main(_train_task, overrides)
        return 0
    spec = RunSpec.from_config(_compose("main", overrides))  # one clear line for a bad config, before any work
    device.accelerator(spec.accelerator)
    schedule_steps(spec, prepare_corpus(spec.data).vocab_size)  # a warmup past the decay: before any record
    layout.check_writable(spec.results_dir)
    holder = claim.live_holder(layout.claim_path(spec.results_dir, spec.run_id))
    if holder is not None:
        raise UsageError(f"run {spec.run_id} is being trained by {claim.describe(holder)}")
    _hydra_main(_train_task, overrides)
    return 0


def sweep_cmd(overrides: list[str]) -> int:
    from scaling_lab import layout
    from scaling_lab.sweep import grid, launch

    if not any(grid.override_key(o) == "sweep" for o in overrides):
        raise UsageError("choose a sweep preset: sweep=NAME (see conf/sweep/)")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        sweep = launch.prepare("main", overrides)
    if sweep.cfg["plan"]:
        from scaling_lab.sweep.plan import report

        print(report(sweep.cfg, sweep.runs, sweep.corpus, sweep.design, sweep.concurrent_jobs))
        return 0
    layout.check_writable(sweep.results_dir)
    grid.write_manifest(sweep.name, sweep.results_dir, sweep.runs)
    print(f"sweep {sweep.name}: {len(sweep.runs)} runs into {sweep.results_dir}")
    _hydra_main(_train_task, ["--multirun", *sweep.overrides])
    if sweep.extends:
        _extend_edges(sweep)
    if sweep.cfg["sweep"].get("fit", True):
        from scaling_lab.sweep.finish import fit_sweep

        fit_sweep(OmegaConf.create(sweep.cfg))
    return 0


def _extend_edges(sweep) -> None:
    """Adaptive IsoFLOP: a second multirun past the budgets whose minimum is at an edge."""
    from scaling_lab.sweep import extend, grid, launch

    extra, edges = extend.extension(sweep.design, sweep.runs, sweep.results_dir,
                                    sweep.cfg["sweep"].get("extend_sizes", 2))
    if extra:
        print(f"edge extension: {len(extra)} runs past the edges of " + ", ".join(
            f"C={b:.3g}" for b in sorted({run.budget for run in extra})))
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            command = launch.add_runs(sweep, "main", extra)
        grid.write_manifest(sweep.name, sweep.results_dir, sweep.runs)
        _hydra_main(_train_task, ["--multirun", *command])
    elif edges:
        print("edge extension: the minimum of " + ", ".join(f"C={b:.3g}" for b in edges) + " is at an edge, but "
              "no new size fits past it (already trained, or under one sequence of tokens)")
    else:
        print("edge extension: every budget's minimum lies inside its sizes; nothing to add")


def fit_cmd(overrides: list[str]) -> int:
    from scaling_lab import layout, tracking
    from scaling_lab.fit import run_fit

    cfg = _compose("fitting", overrides)
    output_dir = cfg.output_dir
    if output_dir is None:
        if not Path(cfg.input).is_dir():
            raise UsageError("output_dir is required when input is not a results directory")
        output_dir = layout.fit_dir(cfg.input)
    wandb_cfg = tracking.fit_settings(OmegaConf.to_container(cfg.logger), group=None, out_dir=Path(output_dir))
    run_fit(cfg.input, Path(output_dir), OmegaConf.to_container(cfg.fit, resolve=True), wandb_cfg=wandb_cfg)
    print(f"report: {layout.fit_report(output_dir)}")
    return 0


def status_cmd(overrides: list[str]) -> int:
    from scaling_lab.sweep.status import render

    args = OmegaConf.from_dotlist(overrides)
    if "results_dir" not in args:
        raise UsageError("status needs results_dir=DIR")
    if not Path(args.results_dir).is_dir():
        raise UsageError(f"results_dir={args.results_dir} is not a directory")
    print(render(args.results_dir))
    return 0


def schema_cmd(overrides: list[str]) -> int:
    from scaling_lab.records import schema_markdown

    print(schema_markdown())
    return 0


STAGES = {"train": train_cmd, "sweep": sweep_cmd, "fit": fit_cmd, "status": status_cmd, "schema": schema_cmd}


def _print_config(stage: str, args: list[str]) -> int:
    """Hydra's `--cfg job|hydra|all` for the stages that compose without hydra.main (fit and sweep; a sweep prints
    the config its jobs share, its swept keys left out): the composed config, unresolved, and nothing run."""
    from scaling_lab.sweep import grid

    flag = next(i for i, arg in enumerate(args) if arg.startswith("-"))
    part = args[flag + 1] if args[flag] in ("--cfg", "-c") and flag + 1 < len(args) else None
    overrides = args[:flag] + args[flag + 2:]
    if part not in ("job", "hydra", "all") or any(arg.startswith("-") for arg in overrides):
        raise UsageError(f"{stage} takes key=value overrides and Hydra's --cfg job|hydra|all; got {' '.join(args)}")
    config_name, overrides = ("fitting", overrides) if stage == "fit" else ("main", grid.fixed(overrides))
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=overrides, return_hydra_config=part != "job")
    print(OmegaConf.to_yaml(cfg.hydra if part == "hydra" else cfg), end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in STAGES:
        print(__doc__)
        return 0 if not argv or argv[0] in ("-h", "--help") else 2
    stage, overrides = argv[0], argv[1:]
    try:
        if stage in ("fit", "sweep") and any(arg.startswith("-") for arg in overrides):
            return _print_config(stage, overrides)
        return STAGES[stage](overrides)
    except _user_errors() as e:
        message = " ".join(str(e).split())  # Hydra's messages span lines; a user gets one
        print(f"scaling-lab {stage}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
