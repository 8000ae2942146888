"""Hydra callbacks: after the last job of a sweep, fit the finished runs and write the report."""

from __future__ import annotations

from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig


class FitAfterSweep(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = config.get("sweep") or {}
        # an IsoFLOP sweep that extends its edges ends after the extension round: the CLI fits it then
        extends = sweep.get("extend_edges") and (sweep.get("design") or {}).get("kind") == "isoflop"
        if sweep and sweep.get("fit", True) and not extends:
            from scaling_lab.sweep.finish import fit_sweep

            fit_sweep(config)
