"""The fit as its own W&B run (job_type "fit"): summary numbers, tables and the report's figures.

W&B trouble never costs the fit: a failure is logged as a warning and the files on disk stand.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def log_fit(fit: dict, table, images: dict, wandb_cfg: dict) -> dict | None:
    try:
        import wandb

        run = wandb.init(project=wandb_cfg.get("project") or "scaling-lab", entity=wandb_cfg.get("entity"),
                         group=wandb_cfg.get("group"), dir=wandb_cfg.get("dir"), mode=wandb_cfg["mode"],
                         job_type="fit", name=f"fit-{wandb_cfg.get('group') or 'runs'}", config=fit["settings"],
                         reinit="finish_previous")
        p, opt, dr = fit["parametric"], fit["compute_optimal"], fit["diminishing_returns"]
        run.summary.update({
            **{f"parametric/{k}": p[k] for k in ("E", "A", "B", "alpha", "beta", "objective")},
            **{f"parametric/ci95/{k}": v for k, v in p["ci95"].items() if v},
            "compute_optimal/a": opt["a"], "compute_optimal/b": opt["b"],
            "isoflop/a": fit["isoflop"]["a"], "isoflop/b": fit["isoflop"]["b"],
            "diminishing_returns/verdict": dr["verdict"], "diminishing_returns/reason": dr["reason"],
            "n_points": fit["n_points"], "n_excluded": len(fit["excluded"]),
        })
        runs = wandb.Table(columns=["run", "params", "tokens", "flops", "loss"],
                           data=[[r, float(n), float(d), float(c), float(loss)] for r, n, d, c, loss in
                                 zip(table.run_ids, table.params, table.tokens, table.flops, table.loss)])
        budgets = wandb.Table(columns=["compute", "runs", "N_opt", "D_opt", "used", "reason"],
                              data=[[b["compute"], b["runs"], b["N_opt"], b["D_opt"], b["used"], b["reason"]]
                                    for b in fit["isoflop"]["budgets"]])
        params = wandb.Table(columns=["parameter", "estimate", "se", "ci95_lo", "ci95_hi"],
                             data=[[k, p[k], p["se"].get(k), *(p["ci95"].get(k) or [None, None])]
                                   for k in ("E", "A", "B", "alpha", "beta")])
        run.log({"runs": runs, "isoflop_budgets": budgets, "parameters": params,
                 **{f"plots/{name}": wandb.Image(str(path)) for name, path in images.items()}})
        info = {"project": run.project, "group": wandb_cfg.get("group"), "id": run.id, "mode": wandb_cfg["mode"],
                "dir": run.dir}
        run.finish()
        return info
    except Exception as e:  # noqa: BLE001 - W&B trouble must never cost the fit
        log.warning("W&B logging of the fit failed (%s: %s); fit.json and report.md are written", type(e).__name__, e)
        return None
