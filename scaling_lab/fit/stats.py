"""Bootstrap bookkeeping: resample multiplicities and percentile summaries (Efron & Tibshirani 1993, Ch. 13)."""

from __future__ import annotations

import numpy as np


def resample_weights(rng: np.random.Generator, n: int, resamples: int) -> np.ndarray:
    """(resamples, n) multiplicities of a nonparametric bootstrap: each row draws n of the n runs."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def interval(samples: np.ndarray, confidence: float) -> list[float] | None:
    """Percentile interval of the finite samples, or None when fewer than half the resamples gave a value."""
    samples = np.asarray(samples, dtype=float)
    finite = samples[np.isfinite(samples)]
    if finite.size < max(2, samples.size // 2):
        return None
    tail = 50.0 * (1.0 - confidence)
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return [float(lo), float(hi)]


def standard_error(samples: np.ndarray) -> float | None:
    finite = np.asarray(samples, dtype=float)
    finite = finite[np.isfinite(finite)]
    return float(np.std(finite, ddof=1)) if finite.size >= max(2, np.size(samples) // 2) else None


def summarize(samples: dict[str, np.ndarray], confidence: float) -> tuple[dict, dict]:
    """({name: SE}, {name: [lo, hi]}) for every bootstrapped quantity."""
    return ({k: standard_error(v) for k, v in samples.items()},
            {k: interval(v, confidence) for k, v in samples.items()})
