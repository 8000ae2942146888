"""Hydra callbacks: after the last job of a sweep, fit the finished runs and write the report."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class FitAfterSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if config.get("sweep") and config.sweep.get("fit", True):
            from scaling_lab.sweep.finish import fit_sweep

            fit_sweep(config)
