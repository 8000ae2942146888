"""Batched L-BFGS: many independent small problems minimised in lock-step with numpy.

Every problem keeps its own iterate, curvature history and step length, but each iteration evaluates all
problems still running in one vectorised call, so a 4,500-start grid costs a few dozen array passes instead of
4,500 Python-level optimiser loops. The method is textbook L-BFGS (Nocedal & Wright 2006, Algorithm 7.4,
two-loop recursion) with a backtracking Armijo line search (ibid., Algorithm 3.1 with the interpolation of
Sec. 3.5). A curvature pair with s.y <= 0 is stored with rho = 0, which makes it a no-op in the two-loop
recursion, so all problems can share one ring-buffer position.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

# fun(x, idx) -> (f, g): objective (k,) and gradient (k, p) at points x (k, p) of the problems numbered idx
Objective = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class BatchResult:
    x: np.ndarray  # (S, p) final points
    f: np.ndarray  # (S,) final objectives
    iterations: np.ndarray  # (S,) iterations taken
    evaluations: int  # objective evaluations, counted once per problem
    s_hist: np.ndarray  # (S, m, p) last curvature pairs, oldest first: warm-starts a related problem
    y_hist: np.ndarray


def minimize_batched(
    fun: Objective,
    x0: np.ndarray,
    *,
    memory: int = 10,
    max_iter: int = 1000,
    ftol: float = 1e-10,
    f_scale: float = 0.0,
    gtol: float = 1e-10,
    max_backtracks: int = 40,
    history: tuple[np.ndarray, np.ndarray] | None = None,
) -> BatchResult:
    """Minimise S independent problems starting from the rows of x0 (S, p).

    A problem stops when an iteration lowers its objective by less than ftol * max(|f|, f_scale) (f_scale 1
    with ftol 2.2e-9 is scipy L-BFGS-B's default rule, factr 1e7; f_scale 0 is a purely relative one), when its
    largest gradient entry is below gtol, when the line search cannot lower it any more (at the kinks of a
    Huber objective that is its optimum to machine precision), or after max_iter iterations.
    ``history`` = (s, y), each (S, m, p) oldest first, seeds the curvature pairs (e.g. those of a nearby
    problem's optimum).
    """
    x = np.array(x0, dtype=float, copy=True)
    n_prob, p = x.shape
    ids = np.arange(n_prob)
    f, g = fun(x, ids)
    out = BatchResult(x=x.copy(), f=f.copy(), iterations=np.zeros(n_prob, dtype=int), evaluations=n_prob,
                      s_hist=np.zeros((n_prob, memory, p)), y_hist=np.zeros((n_prob, memory, p)))
    # slot-major history (m, S, p): slot j of every problem is one contiguous block
    if history is None:
        s_h, y_h = np.zeros((memory, n_prob, p)), np.zeros((memory, n_prob, p))
    else:
        s_h = np.ascontiguousarray(np.swapaxes(history[0], 0, 1), dtype=float)
        y_h = np.ascontiguousarray(np.swapaxes(history[1], 0, 1), dtype=float)
    sy = np.einsum("jkp,jkp->jk", s_h, y_h)
    rho = np.where(sy > 0, 1.0 / np.where(sy > 0, sy, 1.0), 0.0)
    yy = np.einsum("kp,kp->k", y_h[-1], y_h[-1])
    gamma = np.where(rho[-1] > 0, sy[-1] / np.where(yy > 0, yy, 1.0), 1.0)
    iterations = np.zeros(n_prob, dtype=int)
    live = np.isfinite(f) & np.all(np.isfinite(g), axis=1)
    x, f, g, gamma, ids, iterations = x[live], f[live], g[live], gamma[live], ids[live], iterations[live]
    s_h, y_h, rho = s_h[:, live], y_h[:, live], rho[:, live]
    filled = memory if history is not None else 0
    for k in range(memory, memory + max_iter):  # slot k % memory; seeded pairs sit in slots 0..m-1
        if ids.size == 0:
            break
        newest_first = [(k - 1 - i) % memory for i in range(min(filled, memory))]
        direction = -_two_loop(g, s_h, y_h, rho, gamma, newest_first)
        slope = np.einsum("kp,kp->k", g, direction)
        uphill = ~(slope < 0)
        if uphill.any():
            # a stale history can point uphill: restart those problems from steepest descent
            rho[:, uphill] = 0.0
            gamma[uphill] = 1.0
            direction[uphill] = -g[uphill]
            slope[uphill] = -np.einsum("kp,kp->k", g[uphill], g[uphill])
        # without curvature information the first step has no scale: take one of unit length, as L-BFGS-B does
        step = np.ones(ids.size)
        fresh = ~rho.any(axis=0)
        if fresh.any():
            step[fresh] = np.minimum(1.0, 1.0 / np.maximum(np.linalg.norm(direction[fresh], axis=1), 1e-300))
        x_new, f_new, g_new, found, n_eval = _backtrack(fun, ids, x, f, direction, slope, step, max_backtracks)
        out.evaluations += n_eval
        iterations += 1
        s = x_new - x
        y = g_new - g
        sy = np.einsum("kp,kp->k", s, y)
        yy = np.einsum("kp,kp->k", y, y)
        curved = found & (sy > 1e-12 * yy) & (yy > 0)
        slot = k % memory
        np.multiply(s, curved[:, None], out=s_h[slot])
        np.multiply(y, curved[:, None], out=y_h[slot])
        rho[slot] = np.where(curved, 1.0 / np.where(curved, sy, 1.0), 0.0)
        gamma = np.where(curved, sy / np.where(curved, yy, 1.0), gamma)
        filled += 1
        small_step = f - f_new <= ftol * np.maximum(np.maximum(np.abs(f), np.abs(f_new)), f_scale)
        x, f, g = x_new, f_new, np.where(found[:, None], g_new, g)  # a failed search leaves x_new = x
        flat = np.abs(g_new).max(axis=1) <= gtol
        done = ~found | small_step | flat
        if k == memory + max_iter - 1:
            done[:] = True
        if done.any():
            oldest_first = (k + 1 + np.arange(memory)) % memory
            fin = ids[done]
            out.x[fin], out.f[fin], out.iterations[fin] = x[done], f[done], iterations[done]
            out.s_hist[fin] = np.swapaxes(s_h[oldest_first][:, done], 0, 1)
            out.y_hist[fin] = np.swapaxes(y_h[oldest_first][:, done], 0, 1)
            keep = ~done
            x, f, g, gamma, ids, iterations = x[keep], f[keep], g[keep], gamma[keep], ids[keep], iterations[keep]
            s_h, y_h, rho = s_h[:, keep], y_h[:, keep], rho[:, keep]
    return out


def _two_loop(g, s_h, y_h, rho, gamma, newest_first):
    q = g.copy()
    alphas = []
    for j in newest_first:
        a = rho[j] * np.einsum("kp,kp->k", s_h[j], q)
        q -= a[:, None] * y_h[j]
        alphas.append(a)
    q *= gamma[:, None]
    for j, a in zip(reversed(newest_first), reversed(alphas)):
        b = rho[j] * np.einsum("kp,kp->k", y_h[j], q)
        q += s_h[j] * (a - b)[:, None]
    return q


def _backtrack(fun, ids, x, f, direction, slope, step, max_backtracks, c1=1e-4):
    """Armijo backtracking for every problem at once; only the problems still searching are re-evaluated.

    A rejected step shrinks to the minimiser of the quadratic through f(0), f'(0) and f(step), kept within
    [0.1, 0.5] of it, or to a tenth when the trial was not finite.
    """
    n = ids.size
    x_new = x.copy()
    f_new = f.copy()
    g_new = np.zeros_like(x)
    found = np.zeros(n, dtype=bool)
    pending = np.arange(n)
    n_eval = 0
    for round_ in range(max_backtracks):
        t = step[pending]
        if round_ == 0:  # everyone: plain arithmetic instead of gathers
            trial = x + t[:, None] * direction
            ft, gt = fun(trial, ids)
        else:
            trial = x[pending] + t[:, None] * direction[pending]
            ft, gt = fun(trial, ids[pending])
        n_eval += pending.size
        finite = np.isfinite(ft) & np.all(np.isfinite(gt), axis=1)
        ok = finite & (ft <= f[pending] + c1 * t * slope[pending])
        hit = pending[ok]
        x_new[hit], f_new[hit], g_new[hit] = trial[ok], ft[ok], gt[ok]
        found[hit] = True
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            curvature = ft - f[pending] - slope[pending] * t
            t_quad = -slope[pending] * t * t / (2.0 * curvature)
        step[pending] = np.where(finite & (curvature > 0), np.clip(t_quad, 0.1 * t, 0.5 * t), 0.1 * t)
        pending = pending[~ok]
        if pending.size == 0:
            break
    return x_new, f_new, g_new, found, n_eval
