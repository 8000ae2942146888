"""End of a sweep: summarise the runs, fit them, and say where the report is."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from scaling_lab import layout, tracking
from scaling_lab.fit import FitInputError, run_fit
from scaling_lab.sweep.status import summarize


def fit_sweep(cfg: DictConfig) -> dict | None:
    results_dir = cfg.results_dir
    counts = summarize(results_dir)
    print(f"sweep {cfg.sweep.name}: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    if not counts.get("completed"):
        print("no completed runs to fit")
        return None
    out = layout.fit_dir(results_dir)
    wandb_cfg = tracking.fit_settings(OmegaConf.to_container(cfg.logger), group=cfg.sweep.name, out_dir=out)
    try:
        fit = run_fit(str(results_dir), out, OmegaConf.to_container(cfg.fit, resolve=True), wandb_cfg=wandb_cfg)
    except FitInputError as e:  # e.g. too few completed runs: the runs stand, the fit waits for more
        print(f"fit skipped: {e}")
        return None
    print(f"report: {layout.fit_report(out)}")
    return fit
