"""The report's figures, drawn from the fit dict and the table (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def draw_all(table, fit: dict, out_dir: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for name, draw in (("frontier", _frontier), ("isoflop", _isoflop), ("fitted_vs_observed", _fitted),
                       ("residuals", _residuals), ("local_exponent", _local_exponent), ("backtest", _backtest)):
        fig, ax = plt.subplots(figsize=(6.4, 4.4))
        if draw(ax, table, fit):
            fig.tight_layout()
            path = out_dir / f"{name}.png"
            fig.savefig(path, dpi=110)
            drawn[name] = path
        plt.close(fig)
    return drawn


def _law(fit, params, tokens):
    p = fit["parametric"]
    return p["E"] + p["A"] / params ** p["alpha"] + p["B"] / tokens ** p["beta"]


def _frontier(ax, table, fit):
    curve = fit["parametric"].get("optimal_curve")
    ax.scatter(table.flops, table.loss, s=10, c="0.7", label="runs")
    front = fit["envelope"]["frontier"]
    ax.scatter([r["compute"] for r in front], [r["loss"] for r in front], s=18, c="k", label="frontier")
    if curve:
        # the curve's C is 6 N D (the allocation's); the runs' is the input's, which the label names if it differs
        same = fit["compute_optimal"]["input_compute_is_6nd"]
        ax.plot(curve["compute"], curve["loss"], c="C3",
                label="Approach 3 at the compute-optimal N, D" + ("" if same else " (x: 6ND; runs: input C)"))
        lo, hi = _floats(curve.get("lo")), _floats(curve.get("hi"))
        if np.isfinite(lo).any():  # bootstrap resamples that failed leave gaps (None) in the band
            ax.fill_between(curve["compute"], lo, hi, color="C3", alpha=0.2, label="95% band")
    floor = fit["parametric"]["E"]
    if floor > 0.5 * np.min(table.loss):  # a floor far below the runs would squash them flat; the report has it
        ax.axhline(floor, ls=":", c="C3", lw=1, label=f"E = {floor:.3g}")
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="loss", title="Loss frontier and fit")
    ax.legend(fontsize=8)
    return True


def _isoflop(ax, table, fit):
    import matplotlib

    from scaling_lab.fit.isoflop import buckets

    labels = buckets(table.flops, fit["isoflop"]["bucket_decades"])
    shown = [(label, b) for label, b in enumerate(fit["isoflop"]["budgets"]) if b["sizes"] >= 3]
    if not shown:
        return False
    cmap = matplotlib.colormaps["viridis"]
    for j, (label, b) in enumerate(shown):
        color = cmap(j / max(1, len(shown) - 1))
        members = labels == label
        order = np.argsort(table.params[members])
        ax.plot(table.params[members][order], table.loss[members][order], "o-", ms=3, lw=0.8, color=color)
        if b["used"]:
            ax.axvline(b["N_opt"], color=color, lw=0.6, ls="--")
    ax.set(xscale="log", xlabel="parameters N", ylabel="loss",
           title=f"IsoFLOP profiles (a = {_fmt(fit['isoflop']['a'])}; dashed: N_opt)")
    return True


def _fitted(ax, table, fit):
    predicted = _law(fit, table.params, table.tokens)
    ax.scatter(predicted, table.loss, s=10, c=np.log10(table.params), cmap="viridis")
    lo, hi = min(predicted.min(), table.loss.min()), max(predicted.max(), table.loss.max())
    ax.plot([lo, hi], [lo, hi], c="k", lw=0.8)
    ax.set(xscale="log", yscale="log", xlabel="fitted loss", ylabel="observed loss",
           title="Approach 3: fitted vs observed (colour: log10 N)")
    return True


def _residuals(ax, table, fit):
    residual = np.log(table.loss) - np.log(_law(fit, table.params, table.tokens))
    ax.scatter(table.flops, residual, s=10, c=np.log10(table.params), cmap="viridis")
    ax.axhline(0, c="k", lw=0.8)
    ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel="log observed - log fitted", title="Residuals")
    return True


def _local_exponent(ax, table, fit):
    local = fit["diminishing_returns"]["local_exponent"]
    x = np.power(10.0, np.array(local["log10_compute"], dtype=float))
    y = _floats(local["exponent"])
    if not np.isfinite(y).any():
        return False
    lo, hi = _floats(local["band_lo"]), _floats(local["band_hi"])
    ax.plot(x, y, c="C0", label="local exponent of L - E")
    ax.fill_between(x, lo, hi, color="C0", alpha=0.2, label="bootstrap band")
    ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel="-d log(L - E) / d log C",
           title=f"Local exponent along the frontier ({local['call']})")
    ax.legend(fontsize=8)
    return True


def _backtest(ax, table, fit):
    back = fit["diminishing_returns"]["backtest"]
    if not back.get("available"):
        return False
    pts = back["points"]
    x = [p["compute"] for p in pts]
    pred = _floats([p["predicted"] for p in pts])
    lo, hi = _floats([p["lo"] for p in pts]), _floats([p["hi"] for p in pts])
    ax.errorbar(x, pred, yerr=[pred - lo, hi - pred], fmt="none", ecolor="C3", alpha=0.6, label="prediction interval")
    ax.scatter(x, [p["loss"] for p in pts], s=14, c="k", zorder=3, label="observed (held out)")
    below = table.flops <= back["cut"]
    ax.scatter(table.flops[below], table.loss[below], s=8, c="0.7", label="fitted on")
    ax.axvline(back["cut"], ls=":", c="k")
    ax.set(xscale="log", yscale="log", xlabel="compute C (FLOPs)", ylabel="loss",
           title=f"Backtest: coverage {back['coverage']:.0%} ({back['call']})")
    ax.legend(fontsize=8)
    return True


def _floats(values) -> np.ndarray:
    """JSON lists with None for undefined points -> float arrays with NaN, which matplotlib leaves blank."""
    return np.array([np.nan if v is None else v for v in values or []], dtype=float)


def _fmt(value):
    return "n/a" if value is None else f"{value:.3f}"
