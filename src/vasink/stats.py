"""Paired uncertainty for the deltas between two conditions: bootstrap over units, McNemar's exact test, and
Holm's correction for running several comparisons at once.

Below every wing that compares conditions: the eval harness (arms), the analysis (ablations) and the
organism's measurement (VAR on / off) all take their statistics from here, so none depends on another."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np


def paired_bootstrap(metrics: Callable[[Mapping[str, np.ndarray]], Mapping[str, np.ndarray]],
                     base: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray],
                     resamples: int = 1000, seed: int = 0, level: float | Sequence[float] = 0.95,
                     max_elements: int = 1 << 22) -> dict:
    """Percentile CI of ``metric(other) - metric(base)`` per metric, resampling the (paired) units with
    replacement; ``base`` and ``other`` hold per-unit stats with the same unit order. ``level`` may be a
    list of levels: then each metric maps to one interval per level, all from the same resamples.

    Resamples are drawn in chunks of at most ``max_elements`` indices (one RNG stream, so the result does not
    depend on the chunking): a 200k-question benchmark does not need a (resamples x units) array at once."""
    n = len(next(iter(base.values())))
    if n == 0 or resamples <= 0:
        return {}
    rng = np.random.default_rng(seed)
    chunk = max(1, max_elements // n)
    deltas: dict[str, list[np.ndarray]] = {}
    for start in range(0, resamples, chunk):
        index = rng.integers(0, n, size=(min(chunk, resamples - start), n))  # (resamples in chunk, units)
        base_m = metrics({k: v[index] for k, v in base.items()})
        other_m = metrics({k: v[index] for k, v in other.items()})
        for name in base_m:
            deltas.setdefault(name, []).append(
                np.asarray(other_m[name], dtype=float) - np.asarray(base_m[name], dtype=float))
    levels = [level] if isinstance(level, (int, float)) else list(level)
    out = {}
    for name, parts in deltas.items():
        delta = np.concatenate(parts)
        delta = delta[np.isfinite(delta)]
        intervals = []
        for chosen in levels:
            tail = 100 * (1 - chosen) / 2
            intervals.append((float(np.percentile(delta, tail)), float(np.percentile(delta, 100 - tail)))
                             if delta.size else (math.nan, math.nan))
        out[name] = intervals[0] if isinstance(level, (int, float)) else intervals
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


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of ``pvalues`` (family-wise error control for any dependence between the
    tests): the i-th smallest p times (m - i), made monotone and capped at 1, in the input order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    adjusted, running = [0.0] * len(pvalues), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[index]))
        adjusted[index] = running
    return adjusted
