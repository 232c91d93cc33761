"""Paired uncertainty for base-vs-VAR deltas: bootstrap over units and McNemar's exact test."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np


def paired_bootstrap(metrics: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
                     base: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray],
                     resamples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, tuple[float, float]]:
    """Percentile CI of ``metric(other) - metric(base)`` per metric, resampling the (paired) units with
    replacement; ``base`` and ``other`` hold per-unit stats with the same unit order."""
    n = len(next(iter(base.values())))
    if n == 0 or resamples <= 0:
        return {}
    index = np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # (resamples, units)
    base_m = metrics({k: v[index] for k, v in base.items()})
    other_m = metrics({k: v[index] for k, v in other.items()})
    tail = 100 * (1 - level) / 2
    out = {}
    for name in base_m:
        delta = np.asarray(other_m[name], dtype=float) - np.asarray(base_m[name], dtype=float)
        delta = delta[np.isfinite(delta)]
        out[name] = (float(np.percentile(delta, tail)), float(np.percentile(delta, 100 - tail))) if delta.size else \
            (math.nan, math.nan)
    return out


def mcnemar_exact(base_correct, other_correct) -> tuple[int, int, float]:
    """(b, c, p): b = right only in base, c = right only in other; two-sided exact binomial p."""
    base_correct = np.asarray(base_correct, dtype=bool)
    other_correct = np.asarray(other_correct, dtype=bool)
    b = int((base_correct & ~other_correct).sum())
    c = int((~base_correct & other_correct).sum())
    n = b + c
    if n == 0:
        return b, c, 1.0
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2 ** n
    return b, c, min(1.0, 2 * tail)
