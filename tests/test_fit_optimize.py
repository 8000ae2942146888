"""The batched L-BFGS and the analytic gradients it relies on."""

import numpy as np
from scipy.optimize import minimize, rosen, rosen_der

from scaling_lab.fit.optimize import minimize_batched
from scaling_lab.fit.parametric import HuberLSE, grid_starts
from scaling_lab.fit.single_axis import broken_above, power_above, saturating


def rosenbrock(x, idx):
    return np.array([rosen(v) for v in x]), np.array([rosen_der(v) for v in x])


def test_batched_lbfgs_matches_scipy_problem_by_problem():
    starts = np.random.default_rng(0).uniform(-2, 2, size=(40, 4))
    res = minimize_batched(rosenbrock, starts, ftol=1e-15, gtol=1e-9)
    assert res.evaluations > 40
    for x0, x, f in zip(starts, res.x, res.f):
        ref = minimize(rosen, x0, jac=rosen_der, method="L-BFGS-B", options={"ftol": 1e-15, "gtol": 1e-9})
        assert f <= ref.fun + 1e-8  # both find a minimiser of the 4-d Rosenbrock (global or the local one)
        assert np.allclose(x, ref.x, atol=1e-3) or f < 1e-8 or ref.fun > 3


def test_history_warm_start_saves_iterations():
    cold = minimize_batched(rosenbrock, np.array([[0.8, 0.6, 0.4, 0.2]]), ftol=1e-14, gtol=1e-9)
    assert cold.f[0] < 1e-12
    near = cold.x + 1e-2
    fresh = minimize_batched(rosenbrock, near, ftol=1e-14, gtol=1e-9)
    warm = minimize_batched(rosenbrock, near, ftol=1e-14, gtol=1e-9, history=(cold.s_hist, cold.y_hist))
    assert warm.f[0] < 1e-12 and warm.iterations[0] < fresh.iterations[0]


def numeric_gradient(fun, x, h=1e-6):
    return np.array([(fun(x + h * e) - fun(x - h * e)) / (2 * h) for e in np.eye(len(x))])


def test_huber_lse_value_and_gradient():
    rng = np.random.default_rng(1)
    log_n, log_d = rng.uniform(17, 23, 30), rng.uniform(20, 26, 30)
    log_loss = np.log(1.8 + 400 * np.exp(-0.34 * log_n) + 2000 * np.exp(-0.37 * log_d)) + rng.normal(0, 0.01, 30)
    weights = rng.integers(0, 3, size=(2, 30)).astype(float)
    for w, owner in ((None, None), (weights, np.array([1]))):
        obj = HuberLSE(log_n, log_d, log_loss, 1e-3, weights=w, owner=owner)
        x = np.array([6.0, 7.5, 0.6, 0.35, 0.36])
        f, g = obj(x[None], np.array([0]))

        def value(theta):
            pred = np.logaddexp.reduce([theta[0] - theta[3] * log_n, theta[1] - theta[4] * log_d,
                                        np.full(30, theta[2])])
            r = log_loss - pred
            huber = np.where(np.abs(r) <= 1e-3, 0.5 * r * r, 1e-3 * (np.abs(r) - 0.5e-3))
            return float(np.sum(huber if w is None else w[1] * huber))

        assert np.isclose(f[0], value(x), rtol=1e-12)
        np.testing.assert_allclose(g[0], numeric_gradient(value, x), rtol=1e-5, atol=1e-9)


def test_grid_is_the_chinchilla_grid():
    starts = grid_starts()
    assert starts.shape == (4500, 5)
    assert sorted(set(starts[:, 3])) == [0, 0.5, 1, 1.5, 2] and sorted(set(starts[:, 0])) == [0, 5, 10, 15, 20, 25]


def test_single_axis_jacobians():
    lx = np.linspace(-3, 3, 9)[None, :]
    for model, theta in ((saturating, [0.5, 0.4, 0.3]), (lambda t, x: power_above(t, x, 0.5), [0.5, 0.3]),
                         (lambda t, x: broken_above(t, x, 0.5, -2.0, 2.0, 1.0), [0.5, 0.3, 0.4, -0.2])):
        theta = np.array(theta, dtype=float)
        _, jac = model(theta[None], lx)
        for j in range(len(theta)):
            step = np.zeros_like(theta)
            step[j] = 1e-6
            numeric = (model((theta + step)[None], lx)[0] - model((theta - step)[None], lx)[0]) / 2e-6
            np.testing.assert_allclose(jac[0, :, j], numeric[0], rtol=1e-5, atol=1e-9)
