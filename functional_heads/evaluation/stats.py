"""Confidence intervals and paired tests for accuracies."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def bootstrap_ci(correct: Sequence[bool], n_resamples: int = 2000, level: float = 0.95, seed: int = 0
                 ) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `correct`."""
    values = np.asarray(correct, dtype=float)
    if len(values) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (n_resamples, len(values)))].mean(1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, 1 - (1 - level) / 2))


def mcnemar(a: Sequence[bool], b: Sequence[bool]) -> dict:
    """Exact McNemar test of paired outcomes: `b_only` items only b got right, `a_only` only a did;
    p is the two-sided binomial probability of a split at least this uneven among the discordant pairs."""
    if len(a) != len(b):
        raise ValueError("mcnemar needs paired outcomes of equal length.")
    a_only = sum(1 for x, y in zip(a, b) if x and not y)
    b_only = sum(1 for x, y in zip(a, b) if y and not x)
    n, k = a_only + b_only, min(a_only, b_only)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"a_only": a_only, "b_only": b_only, "p": p}
