"""Single-axis laws with an irreducible term, and the broken power law as their alternative.

    saturating  L(x) = E + A x^-alpha                            (Kaplan et al. 2020, Eqs. 1.1-1.3, plus E as
                                                                  in Henighan et al. 2020, Eq. 1)
    broken      L(x) = E + b x^-c0 (1 + (x / d)^(1/f))^(-c1 f)    (Caballero et al. 2022, Eq. 1, one break,
                                                                  sharpness f fixed)

Both are fitted by least squares on log L (a Gaussian likelihood in log space, so the two can be compared by
a likelihood ratio), in the log-sum-exp form of Besiroglu et al. 2024, with the batched L-BFGS of
scaling_lab.fit.optimize over a small grid of starts. Below the break the broken law's local exponent is c0,
far above it c0 + c1: c1 < 0 flattens the curve, c1 > 0 steepens it.
"""

from __future__ import annotations

import itertools

import numpy as np

from scaling_lab.fit.optimize import minimize_batched


def _softplus(z):
    return np.logaddexp(0.0, z)


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def saturating(theta, lx):
    """log L and its Jacobian for theta = (log A, log E, alpha), lx = log x centred."""
    a, e, alpha = theta[:, 0:1], theta[:, 1:2], theta[:, 2:3]
    u = a - alpha * lx
    pred = np.logaddexp(u, e)
    p = _sigmoid(u - e)
    return pred, np.stack([p, 1.0 - p, -lx * p], axis=-1)


def power_above(theta, lx, e):
    """log L and its Jacobian for L = E + A x^-alpha with E = e^e fixed; theta = (log A, alpha)."""
    a, alpha = theta[:, 0:1], theta[:, 1:2]
    u = a - alpha * lx
    pred = np.logaddexp(u, e)
    p = _sigmoid(u - e)
    return pred, np.stack([p, -lx * p], axis=-1)


def broken_above(theta, lx, e, lo, hi, sharpness):
    """log L and its Jacobian for the broken law with E = e^e fixed; theta = (log b, c0, kappa, eta).

    Two reparametrisations keep the alternative honest on a few noisy points: the break sits at
    log d = lo + (hi - lo) sigmoid(eta), inside the data, and c1 = c0 tanh(kappa), so the exponent above the
    break stays between 0 and 2 c0; the sharpness f is fixed. Unconstrained, a break at the last point with
    a huge c1 fits that point's noise.
    """
    lb, c0, kappa, eta = (theta[:, i:i + 1] for i in range(4))
    s_eta, th = _sigmoid(eta), np.tanh(kappa)
    c1 = c0 * th
    z = (lx - (lo + (hi - lo) * s_eta)) / sharpness
    sp, sg = _softplus(z), _sigmoid(z)
    u = lb - c0 * lx - c1 * sharpness * sp
    pred = np.logaddexp(u, e)
    p = _sigmoid(u - e)
    d_c0 = -lx - th * sharpness * sp
    d_kappa = -c0 * (1.0 - th * th) * sharpness * sp
    d_eta = c1 * sg * (hi - lo) * s_eta * (1.0 - s_eta)
    return pred, np.stack([p, d_c0 * p, d_kappa * p, d_eta * p], axis=-1)


class LogSquares:
    """Sum of squared log residuals of a model for many problems; problem i fits row owner[i] of y."""

    def __init__(self, model, lx, y, owner):
        self.model, self.lx, self.y, self.owner = model, lx, np.atleast_2d(y), owner

    def __call__(self, theta, idx):
        with np.errstate(over="ignore", invalid="ignore"):
            pred, jac = self.model(theta, self.lx[None, :])
            r = self.y[self.owner[idx]] - pred
            f = np.einsum("kn,kn->k", r, r)
            g = -2.0 * np.einsum("kn,knp->kp", r, jac)
        return f, g


def _best(model, lx, y, starts):
    """Fit every row of y (R, n) from every start, starts (k, p) shared or (R, k, p) per row;
    (thetas (R, p), rss (R,))."""
    y = np.atleast_2d(y)
    n_rows = len(y)
    starts = np.broadcast_to(starts, (n_rows,) + np.shape(starts)[-2:])
    k = starts.shape[1]
    owner = np.repeat(np.arange(n_rows), k)
    res = minimize_batched(LogSquares(model, lx, y, owner), starts.reshape(n_rows * k, -1), ftol=1e-12,
                           gtol=1e-10, max_iter=300)
    f = np.where(np.isfinite(res.f), res.f, np.inf).reshape(n_rows, k)
    pick = np.argmin(f, axis=1)
    return res.x.reshape(n_rows, k, -1)[np.arange(n_rows), pick], f[np.arange(n_rows), pick]


def _saturating_starts(y):
    """Starts (log A, log E, alpha) for log losses y over centred log x: E a fraction of the lowest loss, and
    the curve through the median loss at the centre (lx = 0, where log(L - E) = log A)."""
    es = np.min(y) + np.log([0.3, 0.7, 0.95])
    alphas = [0.05, 0.15, 0.35, 0.7]
    mid = np.exp(np.median(y))
    return np.array([[np.log(max(mid - np.exp(e), 1e-3 * mid)), e, alpha]
                     for e, alpha in itertools.product(es, alphas)])


def fit_saturating(x, loss) -> dict | None:
    """L = E + A x^-alpha on the points (x, loss); None when there are fewer than 4 of them."""
    if len(x) < 4:
        return None
    center = float(np.mean(np.log(x)))
    lx, y = np.log(x) - center, np.log(loss)
    theta, rss = _best(saturating, lx, y, _saturating_starts(y))
    a, e, alpha = theta[0]
    return {"E": float(np.exp(e)), "A": float(np.exp(a + alpha * center)), "alpha": float(alpha),
            "rss": float(rss[0]), "n": int(len(x))}


def compare_broken(x, loss, floor: float, *, resamples: int, rng: np.random.Generator,
                   sharpness: float = 1.0) -> dict | None:
    """Is the reducible loss L - E a single power law in x, or does its exponent change at a break?

    E is held at ``floor`` (the Approach 3 fit's E): the question is about the reducible part, and a floor
    that appears above the fitted E shows up as a break towards a smaller exponent. Returns the likelihood
    ratio, AIC and BIC, and a parametric-bootstrap p-value (residuals of the single law resampled onto its
    fit, both laws refitted: the break's location is not identified under the null, so the chi-square
    reference does not apply).
    """
    n = len(x)
    if n < 6:
        return None
    center = float(np.mean(np.log(x)))
    lx, y, e = np.log(x) - center, np.log(loss), float(np.log(floor))
    lo, hi = float(np.quantile(lx, 0.1)), float(np.quantile(lx, 0.9))

    def single(theta, grid):
        return power_above(theta, grid, e)

    def alternative(theta, grid):
        return broken_above(theta, grid, e, lo, hi, sharpness)

    above = np.maximum(np.exp(y) - floor, 1e-6 * floor)
    slope, icpt = np.polyfit(lx, np.log(above), 1)
    single_starts = np.array([[icpt, -slope], [icpt, 0.3], [icpt, 0.1]])

    def broken_starts(t1):
        # the single law itself (c1 = 0), and a break either way at three places
        a, alpha = t1
        return np.array([[a, alpha, 0.0, 0.0]] + [[a, alpha, kappa, eta] for kappa, eta in
                                                   itertools.product((-0.5, 0.5), (-1.5, 0.0, 1.5))])

    theta1, rss1 = _best(single, lx, y, single_starts)
    theta2, rss2 = _best(alternative, lx, y, broken_starts(theta1[0]))
    rss2 = np.minimum(rss2, rss1)  # the single law is the broken law with c1 = 0
    lr = n * np.log(rss1[0] / rss2[0])
    pred1, _ = single(theta1, lx[None, :])
    resid = y - pred1[0]
    resid -= resid.mean()
    sims = pred1[0] + rng.choice(resid, size=(resamples, n), replace=True)
    sim1, sim_rss1 = _best(single, lx, sims, theta1)
    _, sim_rss2 = _best(alternative, lx, sims, np.stack([broken_starts(t) for t in sim1]))
    sim_lr = n * np.log(sim_rss1 / np.minimum(sim_rss2, sim_rss1))
    lb, c0, kappa, eta = theta2[0]
    c1 = c0 * np.tanh(kappa)
    # Monte Carlo p-value (1 + #{LR* >= LR}) / (R + 1): the observed data counts as one of R + 1 draws
    # (Davison & Hinkley 1997, Sec. 4.2)
    p_value = (1 + np.sum(sim_lr >= lr)) / (resamples + 1)
    # AIC = n log(RSS/n) + 2k (Akaike 1974), BIC = n log(RSS/n) + k log n (Schwarz 1978): -2 log-likelihood of
    # Gaussian log residuals up to a shared constant; k free parameters, E held fixed in both laws
    k1, k2 = 2, 4
    return {
        "n": n, "floor_E": floor, "lr": float(lr), "p_value": float(p_value),
        "resamples": resamples, "sharpness": sharpness,
        "aic": {"single": float(n * np.log(rss1[0] / n) + 2 * k1), "broken": float(n * np.log(rss2[0] / n) + 2 * k2)},
        "bic": {"single": float(n * np.log(rss1[0] / n) + k1 * np.log(n)),
                "broken": float(n * np.log(rss2[0] / n) + k2 * np.log(n))},
        "single_exponent": float(theta1[0, 1]),
        "exponent_below": float(c0), "exponent_above": float(c0 + c1), "c1": float(c1),
        "break": float(np.exp(lo + (hi - lo) * _sigmoid(eta) + center)),
    }
