"""Weights & Biases settings shared by training runs and fits: offline unless asked, never fatal, no secrets.

The mode comes from WANDB_MODE when set, else from `logger.mode` (default offline: no account needed; sync later
with `wandb sync <run dir>/wandb/offline-run-*`); `logger=none` (mode disabled) wins over WANDB_MODE. Only configs
we build are logged; the environment never is.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)
MODES = ("offline", "online", "disabled")


class LoggerConfigError(ValueError):
    """A `logger` config (or WANDB_MODE) that cannot work; the message names it."""


# W&B's older names for its modes, still accepted in WANDB_MODE
_SYNONYMS = {"dryrun": "offline", "run": "online"}


def mode(configured: str) -> str:
    """The W&B mode a run or fit uses: WANDB_MODE's, else `logger.mode`; an explicit `disabled` always wins."""
    chosen = configured if configured == "disabled" else os.environ.get("WANDB_MODE") or configured
    chosen = _SYNONYMS.get(chosen, chosen)
    if chosen not in MODES:
        where = "WANDB_MODE" if os.environ.get("WANDB_MODE") else "logger.mode"
        raise LoggerConfigError(f"{where}={chosen!r} is not one of {MODES}")
    return chosen


def fit_settings(logger_cfg: dict, group: str | None, out_dir: Path) -> dict | None:
    """What run_fit needs to log a fit to W&B (group = the sweep), or None when W&B is disabled."""
    chosen = mode(logger_cfg["mode"])
    if chosen == "disabled":
        return None
    return {**logger_cfg, "mode": chosen, "group": group, "dir": str(out_dir)}


def run_id(results_dir: Path, name: str) -> str:
    """Stable W&B id: the same run in the same results directory always continues one W&B run."""
    where = hashlib.sha256(str(Path(results_dir).resolve()).encode()).hexdigest()[:6]
    return f"{name}-{where}"


def wandb_logger(spec, config: dict):
    """Lightning's WandbLogger for a run, or None when W&B is disabled or cannot start (the run goes on).

    An online run that cannot start (no network, bad key, server error) logs offline instead, under the same id,
    so `wandb sync` can upload it later.
    """
    chosen = mode(spec.logger["mode"])
    for attempt in {"online": ("online", "offline"), "offline": ("offline",)}.get(chosen, ()):
        try:
            return _start(spec, config, attempt)
        except Exception as e:  # noqa: BLE001 - W&B trouble must never cost a training run
            then = "logging offline instead" if attempt == "online" else "training continues without it"
            log.warning("W&B could not start %s (%s: %s); %s", attempt, type(e).__name__, e, then)
            try:
                import wandb

                wandb.teardown()  # the failed run keeps its id busy in W&B's service until torn down
            except Exception:  # noqa: BLE001 - a W&B that cannot even be imported must not cost the run either
                pass
    return None


def _start(spec, config: dict, chosen: str):
    from lightning.pytorch.loggers import WandbLogger

    settings = spec.logger
    logger = WandbLogger(
        project=settings["project"], entity=settings["entity"], group=spec.sweep or "single-runs",
        name=spec.run_id, id=run_id(spec.results_dir, spec.run_id), save_dir=str(spec.run_dir),
        job_type="train", mode=chosen, resume="allow", config=config,
    )
    experiment = logger.experiment
    # tokens and FLOPs are the x-axes of a scaling study, not optimizer steps
    experiment.define_metric("tokens")
    experiment.define_metric("flops")
    for pattern in ("train/*", "val/*", "lr"):
        experiment.define_metric(pattern, step_metric="tokens")
    # W&B gives a metric one default x-axis, so the losses are logged a second time under compute/ against FLOPs
    experiment.define_metric("compute/*", step_metric="flops")
    return logger


def finish(logger) -> dict | None:
    """The record's `wandb` field; a W&B error while closing is logged, never raised (the run itself is done)."""
    if logger is None:
        return None
    try:
        experiment = logger.experiment
        info = {"project": experiment.project, "group": experiment.group, "id": experiment.id,
                "mode": experiment.settings.mode, "dir": experiment.dir}
        experiment.finish()
    except Exception as e:  # noqa: BLE001
        log.warning("W&B could not finish the run (%s: %s); the local record is unaffected", type(e).__name__, e)
        return None
    return info
