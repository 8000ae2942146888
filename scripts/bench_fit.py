"""Time the Approach 3 grid fit and its bootstrap against a plain loop of scipy L-BFGS-B over the same grid.

    .venv/bin/python scripts/bench_fit.py [--resamples 1000] [--csv tests/data/chinchilla_epoch_svg_extracted_data.csv]

Data: Epoch AI's reconstruction of the Chinchilla runs, 5 highest losses dropped (240 points), as in
Besiroglu et al. 2024. The plain loop is scipy.optimize.minimize(method="L-BFGS-B") from each of the 4,500
starts in turn, on the same objective written the plain way (numpy on one parameter vector), with its analytic
gradient and scipy's default stopping rule: an honest baseline, not a strawman with finite differences. For
reference the loop is also timed with the batched objective called on one start at a time. Numpy is pinned to
one thread so the comparison is one core against one core. Times are wall clock and the process's CPU time;
on a shared machine the CPU time is the steadier of the two.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from scaling_lab.fit.parametric import HuberLSE, bootstrap_fit, fit_grid, grid_starts, named  # noqa: E402
from scaling_lab.fit.stats import resample_weights  # noqa: E402
from scaling_lab.fit.table import load_table  # noqa: E402

DEFAULT_CSV = Path(__file__).resolve().parent.parent / "tests" / "data" / "chinchilla_epoch_svg_extracted_data.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--csv", default=str(DEFAULT_CSV))
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    table = load_table(args.csv, {"columns": {"params": "Model Size", "flops": "Training FLOP"},
                                  "exclude_top_loss": 5})
    log_n, log_d, log_loss = np.log(table.params), np.log(table.tokens), np.log(table.loss)
    print(f"{len(table)} points; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs visible")

    with Timer() as t_grid:
        grid = fit_grid(log_n, log_d, log_loss)
    weights = resample_weights(np.random.default_rng(args.seed), len(table), args.resamples)
    with Timer() as t_boot:
        boot_fit = bootstrap_fit(log_n, log_d, log_loss, grid, weights, rng=np.random.default_rng(args.seed))
    boot = named(boot_fit.thetas)
    best = named(grid.theta)
    print(f"batched grid fit:      {t_grid}  objective {grid.objective:.7g}, {grid.n_at_optimum} of "
          f"{grid.n_starts} starts at the optimum; " + ", ".join(f"{k} {float(v):.5g}" for k, v in best.items()))
    lo, hi = np.percentile(boot["alpha"], [2.5, 97.5]), np.percentile(boot["beta"], [2.5, 97.5])
    print(f"batched bootstrap:     {t_boot}  {args.resamples} resamples; alpha 95% [{lo[0]:.4f}, {lo[1]:.4f}], "
          f"beta 95% [{hi[0]:.4f}, {hi[1]:.4f}]; warm start checked on {boot_fit.checked} resamples "
          f"against {len(grid.seeds)} grid starts: {boot_fit.disagreements} disagreements")

    def plain(theta):
        # Besiroglu et al. 2024 (Sec. 2): Huber(delta 1e-3) of log L - LSE(a - alpha log N, b - beta log D, e)
        a, b, e, alpha, beta = theta
        terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
        top = terms.max(axis=0)
        weights = np.exp(terms - top)
        total = weights.sum(axis=0)
        r = log_loss - (top + np.log(total))
        psi = np.clip(r, -1e-3, 1e-3)
        share = weights / total
        grad = -np.array([psi @ share[0], psi @ share[1], psi @ share[2], -(psi * log_n) @ share[0],
                          -(psi * log_d) @ share[1]])
        return float(np.sum(psi * (r - psi / 2))), grad

    batched_one = HuberLSE(log_n, log_d, log_loss, 1e-3)
    one = np.zeros(1, dtype=int)

    def batched(theta):
        f, g = batched_one(theta[None], one)
        return f[0], g[0]

    total_wall, total_cpu = t_grid.wall + t_boot.wall, t_grid.cpu + t_boot.cpu
    for name, fun in (("plain scipy loop grid", plain), ("loop, batched objective", batched)):
        with Timer() as t_loop:
            results = [minimize(fun, x0, jac=True, method="L-BFGS-B") for x0 in grid_starts()]
        f_loop = np.array([r.fun for r in results])
        loop_best = named(results[int(np.argmin(f_loop))].x)
        print(f"{name + ':':23s}{t_loop}  objective {f_loop.min():.7g}, "
              f"{int(np.sum(f_loop <= f_loop.min() * (1 + 1e-6)))} starts within 1e-6; "
              + ", ".join(f"{k} {float(v):.5g}" for k, v in loop_best.items()))
        print(f"  ratio (batched grid + {args.resamples} resamples) / ({name}): "
              f"wall {total_wall / t_loop.wall:.3f}, cpu {total_cpu / t_loop.cpu:.3f}")


class Timer:
    def __enter__(self):
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall0, time.process_time() - self.cpu0

    def __str__(self):
        return f"{self.wall:6.2f} s wall, {self.cpu:6.2f} s cpu"


if __name__ == "__main__":
    main()
