"""report.md: the short answer first, then the tables behind it, then the figures."""

from __future__ import annotations

import os
from pathlib import Path


def render(fit: dict, images: dict[str, Path], out_dir: Path) -> str:
    p, opt, iso, env = fit["parametric"], fit["compute_optimal"], fit["isoflop"], fit["envelope"]
    dr = fit["diminishing_returns"]
    ci, oci = p["ci95"], opt["ci95"]
    lines = [
        "# Scaling-law fit",
        "",
        f"**Answer.** On {fit['n_points']} runs from `{fit['input']}`: "
        f"L(N, D) = {p['E']:.4g} + {p['A']:.4g} / N^{p['alpha']:.4f} + {p['B']:.4g} / D^{p['beta']:.4f}. "
        f"Compute-optimal N_opt ∝ C^{_num(opt['a'], 3)} {_ci(oci.get('a'))} and "
        f"D_opt ∝ C^{_num(opt['b'], 3)} {_ci(oci.get('b'))}; "
        f"at C = 6ND = {opt['target_compute']:.3g} FLOPs: N = {_num(opt['N_opt'], 3)}, D = {_num(opt['D_opt'], 3)} "
        f"({_num(opt['tokens_per_param'], 3)} tokens per parameter), loss {_num(opt['loss_opt'])} "
        f"{_ci(oci.get('loss_opt'))}." + _undefined(p),
        "",
        f"**Diminishing returns: {dr['verdict']}** ({dr['reason']}; at {100 * dr['confidence']:.0f}% confidence).",
        "",
        "| evidence | finding | why |",
        "|---|---|---|",
    ]
    for key, name in (("local_exponent", "local exponent of L - E"), ("broken_power_law", "single vs broken law"),
                      ("backtest", "backtest")):
        lines.append(f"| {name} | {dr[key]['call']} | {dr[key]['why']} |")
    lines += ["", "## Approach 3: L = E + A/N^alpha + B/D^beta", "",
              f"Huber loss (delta {p['huber_delta']:g}) on log residuals, summed over points; L-BFGS from all "
              f"{p['starts']} starts of the Chinchilla grid, run as one vectorised batch. Objective {p['objective']:.7g}; "
              f"{p['starts_at_optimum']} starts reached the optimum (within 1e-6 of it). Log-residual RMS {p['residual_rms']:.3g}.",
              "", "| parameter | estimate | bootstrap SE | 95% interval |", "|---|---|---|---|"]
    for name in ("E", "A", "B", "alpha", "beta"):
        lines.append(f"| {name} | {p[name]:.5g} | {_num(p['se'].get(name))} | {_ci(ci.get(name))} |")
    b = p["bootstrap"]
    lines += ["", f"Bootstrap: {b['resamples']} nonparametric resamples of the runs (seed {b['seed']}). Each resample "
              "is refitted from the full-data optimum with its L-BFGS curvature pairs (a warm start), not from the "
              f"whole grid; to check that shortcut, {b['checked']} random resamples were also refitted from the "
              f"{b['check_starts']} grid starts that reached the optimum fastest: {b['disagreements']} found a lower "
              "optimum" + (", so every resample was refitted from those starts too." if b["refit_all_from_grid_starts"]
                           else "."), "",
              "## Compute-optimal allocation", "",
              "From Approach 3 with C = 6 N D (Hoffmann et al. 2022, Eq. 4), N and D as fitted, whatever the input's "
              "C counts: a = beta/(alpha+beta), b = alpha/(alpha+beta); N_opt, D_opt and loss_opt at "
              f"C = 6ND = {opt['target_compute']:.3g} FLOPs (`fit.target_compute`, default 10x the runs' largest 6ND). "
              "Intervals: the bootstrap resamples of the fit, each allocated at the same C.",
              "", "| quantity | estimate | 95% interval |", "|---|---|---|"]
    for name in ("a", "b", "N_opt", "D_opt", "tokens_per_param", "loss_opt"):
        lines.append(f"| {name} | {_num(opt[name])} | {_ci(oci.get(name))} |")
    lines += ["", "| method | a (N_opt ∝ C^a) | b (D_opt ∝ C^b) |", "|---|---|---|",
              f"| Approach 3 (parametric) | {_num(opt['a'], 3)} {_ci(oci.get('a'))} | "
              f"{_num(opt['b'], 3)} {_ci(oci.get('b'))} |",
              f"| Approach 2 (IsoFLOP) | {_num(iso['a'], 3)} {_ci(iso['ci95'].get('a'))} | "
              f"{_num(iso['b'], 3)} {_ci(iso['ci95'].get('b'))} |",
              f"| Approach 1 (envelope) | {_num(env['a'], 3)} {_ci(env['ci95'].get('a'))} | "
              f"{_num(env['b'], 3)} {_ci(env['ci95'].get('b'))} |", "", _conventions(opt), ""]
    if iso["reason"]:
        lines += [f"IsoFLOP: {iso['reason']}.", ""]
    used = [x for x in iso["budgets"] if x["used"]]
    rejected = [x for x in iso["budgets"] if not x["used"] and x["sizes"] >= 3]
    if used or rejected:
        lines += [f"IsoFLOP budgets (compute: the input's C; parabola in log N through the {iso['window']} sizes "
                  "nearest the lowest loss):", "",
                  "| compute | runs | N_opt | D_opt | used |", "|---|---|---|---|---|"]
        for x in used + rejected:
            lines.append(f"| {x['compute']:.3g} | {x['runs']} | {_num(x['N_opt'])} | {_num(x['D_opt'])} | "
                         f"{'yes' if x['used'] else 'no: ' + x['reason']} |")
        lines.append("")
    lines += ["## Single-axis laws (L = E + A x^-alpha)", "", "| law | points | E | A | alpha |", "|---|---|---|---|---|"]
    for name, law in fit["single_axis"].items():
        if law:
            lines.append(f"| {name} | {law['n']} | {law['E']:.4g} | {law['A']:.4g} | {law['alpha']:.4f} |")
        else:
            lines.append(f"| {name} | fewer than 4 | | | |")
    lines += ["", "L(N): the lowest loss of each size; L(D): of each token count; L(C): the compute frontier.", ""]
    lines += _evidence(dr)
    if fit["excluded"] or fit["notes"]:
        lines += ["## Input", ""] + [f"- {n}" for n in fit["notes"]]
        if fit["excluded"]:
            lines += ["", f"{len(fit['excluded'])} runs excluded:", "", "| run | reason |", "|---|---|"]
            lines += [f"| {e['run']} | {e['reason']} |" for e in fit["excluded"]]
        lines.append("")
    if images:
        lines += ["## Figures", ""] + [f"![{name}]({os.path.relpath(path, out_dir)})" for name, path in images.items()]
    return "\n".join(lines) + "\n"


def _evidence(dr: dict) -> list[str]:
    le, bp, bt = dr["local_exponent"], dr["broken_power_law"], dr["backtest"]
    out = ["## Diminishing returns: the evidence", "",
           f"E = {dr['floor_E']:.4g}, from {dr['floor_from']}; the runs span {dr['compute_decades']:.2g} decades of compute.",
           "", f"**Local exponent** of L - E along the frontier: lower half {_num(le['lower_half'])}, upper half "
           f"{_num(le['upper_half'])}, change {_num(le['change'])} {_ci(le['change_ci'])}.", ""]
    if "lr" in bp:
        out += [f"**Single vs broken power law** on the {bp['n']} frontier runs (E held at the fitted floor): "
                f"likelihood ratio {bp['lr']:.3g}, parametric-bootstrap p = {bp['p_value']:.3f} ({bp['resamples']} "
                f"simulations); AIC single {bp['aic']['single']:.1f} vs broken {bp['aic']['broken']:.1f}; break at "
                f"C = {bp['break']:.3g}, exponent {bp['exponent_below']:.3g} below and {bp['exponent_above']:.3g} above.", ""]
    if bt.get("available"):
        out += [f"**Backtest**: Approach 3 fitted on the {bt['n_fit']} runs with C <= {bt['cut']:.3g}, predicting the "
                f"{bt['n_held_out']} above: mean log error {bt['mean_log_error']:+.4f} (no-change interval "
                f"{_ci(bt['null_interval'])}), p = {bt['p_value']:.3f}; {bt['coverage']:.0%} of the held-out runs inside "
                f"their {100 * bt['confidence']:.0f}% prediction intervals.", ""]
    return out


def _conventions(opt: dict) -> str:
    """Which C each row of the comparison is per: the exponents of different C differ when C / 6ND varies."""
    if opt["input_compute_is_6nd"]:
        return "All three count C = 6 N D: the input's C equals 6ND on every run."
    lo, hi = opt["input_compute_over_6nd"]
    return ("Approach 3 counts C = 6 N D; Approaches 2 and 1 (IsoFLOP budgets, the frontier) and the diminishing-"
            f"returns evidence use the input's C (see Input), {lo:.4g} to {hi:.4g} x 6ND on these runs, so their "
            "exponents and budgets are per that C, not directly comparable with Approach 3's.")


def _undefined(p: dict) -> str:
    if p["alpha"] > 0 and p["beta"] > 0:
        return ""
    return (" The allocation is undefined (n/a): loss does not fall with both N and D in this fit "
            f"(alpha {p['alpha']:.3g}, beta {p['beta']:.3g}), typically because the runs are too small or too few.")


def _ci(pair) -> str:
    return "" if not pair else f"[{pair[0]:.4g}, {pair[1]:.4g}]"


def _num(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"
