"""Approach 3 of Hoffmann et al. 2022 (Sec. 3.3): L(N, D) = E + A / N^alpha + B / D^beta.

Fitted as Besiroglu et al. 2024 ("Chinchilla Scaling: A replication attempt", Sec. 2) refit it: in log space,
log L_hat = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b, E = e^e, a Huber loss (delta 1e-3)
on log L - log L_hat SUMMED over points, L-BFGS from every start of the 4,500-point grid, best kept.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from scaling_lab.fit.optimize import minimize_batched

# the grid of Hoffmann et al. 2022 (App. D.2) as Besiroglu et al. 2024 (Sec. 2) ran it; order (a, b, e, alpha, beta)
GRID_AB = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_EXPONENT = (0.0, 0.5, 1.0, 1.5, 2.0)
# elements of the (starts x 2 points) block evaluated at once: large enough to amortise numpy's per-call
# overhead, small enough that the scratch arrays stay in the L2 cache
_CHUNK_ELEMENTS = 60_000


def grid_starts() -> np.ndarray:
    return np.array(list(itertools.product(GRID_AB, GRID_AB, GRID_E, GRID_EXPONENT, GRID_EXPONENT)))


class HuberLSE:
    """Summed Huber loss of log residuals for many parameter vectors at once, with its analytic gradient.

    Problem i may weight the points by row owner[i] of ``weights`` (bootstrap multiplicities); the weights
    enter the sum, so a resample costs the same as the full data.
    """

    def __init__(self, log_n, log_d, log_loss, delta, weights=None, owner=None):
        self.log_loss = np.asarray(log_loss, dtype=float)
        self.delta = float(delta)
        n = len(self.log_loss)
        # both exponents of every point from one matmul: theta @ design = [a - alpha log N | b - beta log D]
        self.design = np.zeros((5, 2 * n))
        self.design[0, :n] = 1.0
        self.design[1, n:] = 1.0
        self.design[3, :n] = -np.asarray(log_n, dtype=float)
        self.design[4, n:] = -np.asarray(log_d, dtype=float)
        self.design_t = np.ascontiguousarray(self.design.T)
        self.ones = np.ones(n)
        self.weights = weights
        self.owner = owner
        # scratch reused by every call: allocating and freeing arrays of this size in the hot loop makes
        # glibc hand pages back and fault them in again, which doubled the cost of an evaluation
        self.rows = max(1, _CHUNK_ELEMENTS // (2 * n))
        self._terms = np.empty((self.rows, 2 * n))
        self._s, self._r, self._psi, self._sq, self._w = (np.empty((self.rows, n)) for _ in range(5))

    def __call__(self, x, idx):
        f = np.empty(len(x))
        g = np.empty_like(x)
        for lo in range(0, len(x), self.rows):
            hi = min(lo + self.rows, len(x))
            f[lo:hi], g[lo:hi] = self._chunk(x[lo:hi], idx[lo:hi])
        return f, g

    def _chunk(self, x, idx):
        k, n = len(x), len(self.log_loss)
        terms, s, r, psi, sq = self._terms[:k], self._s[:k], self._r[:k], self._psi[:k], self._sq[:k]
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            exp_e = np.exp(x[:, 2])
            # log L_hat = log(e^(a - alpha log N) + e^(b - beta log D) + e^e); without the usual max-shift an
            # overflow or a total underflow gives a non-finite objective, which the line search rejects
            np.matmul(x, self.design, out=terms)
            np.exp(terms, out=terms)
            np.add(terms[:, :n], terms[:, n:], out=s)
            s += exp_e[:, None]
            np.log(s, out=r)
            np.subtract(self.log_loss, r, out=r)
            np.clip(r, -self.delta, self.delta, out=psi)  # Huber's psi = d huber / d r
            np.multiply(psi, psi, out=sq)
            if self.weights is not None:
                w = np.take(self.weights, self.owner[idx], axis=0, out=self._w[:k])
                psi *= w
                sq *= w
            r *= psi  # huber(r) = psi r - psi^2 / 2 in both regimes
            f = r @ self.ones - 0.5 * (sq @ self.ones)
            np.reciprocal(s, out=s)
            s *= psi  # -d f / d log L_hat, divided by the sum whose log it is
            terms[:, :n] *= s
            terms[:, n:] *= s
            g = terms @ self.design_t
            g *= -1.0
            g[:, 2] = -(s @ self.ones) * exp_e
        return f, g


@dataclass
class GridFit:
    theta: np.ndarray  # (5,) best (a, b, e, alpha, beta)
    objective: float
    n_starts: int
    n_at_optimum: int  # starts that ended within optimum_rtol of the best objective
    evaluations: int
    history: tuple[np.ndarray, np.ndarray]  # L-BFGS curvature pairs at the optimum, (1, m, 5) each
    seeds: np.ndarray  # (k, 5) grid starts that reached the optimum in the fewest iterations


def fit_grid(log_n, log_d, log_loss, *, delta=1e-3, starts=None, optimum_rtol=1e-6, n_seeds=2) -> GridFit:
    """Every grid start to convergence in one batch, then the starts that ended near the best polished.

    The batch stops each start by scipy L-BFGS-B's default rule (factr 1e7: a decrease below 2.2e-9 *
    max(|f|, 1)), the same effort per start as a plain loop of scipy.optimize.minimize; the starts within
    1e-3 of the best are then run on to a relative tolerance of 1e-12 (at most 300 more iterations), so the reported optimum and the count
    of starts that reach it do not depend on where the loose rule happened to stop.
    """
    starts = grid_starts() if starts is None else np.asarray(starts, dtype=float)
    objective = HuberLSE(log_n, log_d, log_loss, delta)
    coarse = minimize_batched(objective, starts, ftol=2.2e-9, f_scale=1.0, gtol=1e-5)
    near = np.flatnonzero(coarse.f <= coarse.f.min() * (1 + 1e-3))
    fine = minimize_batched(objective, coarse.x[near], ftol=1e-12, gtol=1e-12, max_iter=300)
    final_f, final_x = coarse.f.copy(), coarse.x.copy()
    final_f[near], final_x[near] = fine.f, fine.x
    best = int(np.argmin(final_f))
    at_optimum = np.flatnonzero(final_f <= final_f[best] * (1 + optimum_rtol))
    seeds = starts[at_optimum[np.argsort(coarse.iterations[at_optimum], kind="stable")][:n_seeds]]
    i = int(np.flatnonzero(near == best)[0])
    return GridFit(theta=final_x[best], objective=float(final_f[best]), n_starts=len(starts),
                   n_at_optimum=len(at_optimum), evaluations=coarse.evaluations + fine.evaluations,
                   history=(fine.s_hist[i:i + 1], fine.y_hist[i:i + 1]), seeds=seeds)


@dataclass
class BootstrapFit:
    thetas: np.ndarray  # (R, 5) optimum of every resample
    checked: int  # resamples also refitted from the grid seeds
    disagreements: int  # of those, how many the seeds took to a lower optimum than the warm start
    refit_all: bool  # whether disagreements sent every resample through the seeds as well


def bootstrap_fit(log_n, log_d, log_loss, grid: GridFit, weights, *, delta=1e-3, check=50,
                  rng: np.random.Generator | None = None) -> BootstrapFit:
    """Refit every resample (rows of ``weights``: multiplicities of the points).

    Each resample starts from the full-data optimum with its L-BFGS curvature pairs (a resample's optimum is
    near it, so the first steps are already quasi-Newton steps). That a warm start finds the resample's
    optimum is checked, not assumed: ``check`` random resamples are also refitted from the grid seeds (the
    grid starts that reached the full-data optimum fastest); if any of them lands lower, every resample is
    refitted from the seeds too and the best kept.
    """
    weights = np.asarray(weights, dtype=float)
    n_res = len(weights)
    rng = rng or np.random.default_rng(0)
    checked = np.sort(rng.choice(n_res, size=min(check, n_res), replace=False)) if len(grid.seeds) else np.array([], int)
    warm, from_seeds = _refit(log_n, log_d, log_loss, grid, weights, np.arange(n_res), checked, delta)
    lower = from_seeds[1] < warm[1][checked] * (1 - 1e-6)
    thetas = warm[0].copy()
    refit_all = bool(lower.any())
    if refit_all:
        _, (x_all, f_all) = _refit(log_n, log_d, log_loss, grid, weights, np.array([], int), np.arange(n_res), delta)
        better = f_all < warm[1]
        thetas[better] = x_all[better]
    return BootstrapFit(thetas=thetas, checked=len(checked), disagreements=int(lower.sum()), refit_all=refit_all)


def _refit(log_n, log_d, log_loss, grid, weights, warm_rows, seed_rows, delta):
    """One batch: the warm start for warm_rows and every grid seed for seed_rows, each stopped by scipy's
    rule, then each problem polished to a relative tolerance of 1e-10. Returns ((x, f) of the warm starts,
    (x, f) of the best seed per seed row)."""
    k = len(grid.seeds)
    starts = np.vstack([np.tile(grid.theta, (len(warm_rows), 1)), np.tile(grid.seeds, (len(seed_rows), 1))])
    owner = np.concatenate([warm_rows, np.repeat(seed_rows, k)])
    objective = HuberLSE(log_n, log_d, log_loss, delta, weights=weights, owner=owner)
    s0, y0 = grid.history
    history = (np.repeat(s0, len(owner), axis=0), np.repeat(y0, len(owner), axis=0))
    loose = minimize_batched(objective, starts, ftol=2.2e-9, f_scale=1.0, gtol=1e-5, history=history, max_iter=300)
    res = minimize_batched(objective, loose.x, ftol=1e-10, gtol=1e-10, history=(loose.s_hist, loose.y_hist),
                           max_iter=300)
    n_warm = len(warm_rows)
    seed_f = res.f[n_warm:].reshape(len(seed_rows), k)
    pick = np.argmin(seed_f, axis=1) if k else np.zeros(0, dtype=int)
    seed_x = res.x[n_warm:].reshape(len(seed_rows), k, 5)[np.arange(len(seed_rows)), pick]
    return (res.x[:n_warm], res.f[:n_warm]), (seed_x, seed_f[np.arange(len(seed_rows)), pick])


def named(theta: np.ndarray) -> dict[str, np.ndarray]:
    """E, A, B, alpha, beta from (..., 5) thetas (a, b, e, alpha, beta)."""
    theta = np.asarray(theta, dtype=float)
    return {"E": np.exp(theta[..., 2]), "A": np.exp(theta[..., 0]), "B": np.exp(theta[..., 1]),
            "alpha": theta[..., 3], "beta": theta[..., 4]}


def predict(theta: np.ndarray, params, tokens) -> np.ndarray:
    p = named(theta)
    return p["E"] + p["A"] / np.power(params, p["alpha"]) + p["B"] / np.power(tokens, p["beta"])


def allocation(theta: np.ndarray, compute: float) -> dict[str, np.ndarray]:
    """Compute-optimal N and D under C = 6 N D (Hoffmann et al. 2022, Eq. 4 and App. D.2):
    N_opt = G (C/6)^a, D_opt = G^-1 (C/6)^b, a = beta/(alpha+beta), b = alpha/(alpha+beta),
    G = (alpha A / (beta B))^(1/(alpha+beta)); works on (..., 5) thetas. ``compute`` is 6 N D with N the
    fitted model size, never C under another convention: the law knows only N and D."""
    p = named(theta)
    with np.errstate(all="ignore"):
        total = p["alpha"] + p["beta"]
        a, b = p["beta"] / total, p["alpha"] / total
        log_g = (np.log(p["alpha"] * p["A"]) - np.log(p["beta"] * p["B"])) / total
        n_opt = np.exp(log_g + a * np.log(compute / 6.0))
        d_opt = np.exp(-log_g + b * np.log(compute / 6.0))
        loss = p["E"] + p["A"] / n_opt ** p["alpha"] + p["B"] / d_opt ** p["beta"]
    return {"a": a, "b": b, "G": np.exp(log_g), "N_opt": n_opt, "D_opt": d_opt,
            "tokens_per_param": d_opt / n_opt, "loss_opt": loss}
