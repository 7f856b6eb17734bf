"""Confidence intervals and paired tests for accuracies."""

from __future__ import annotations

import math
from statistics import NormalDist
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


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given): controls the family-wise error rate of the
    family of tests given, under any dependence between them. Reject where adjusted p < alpha."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def paired_difference(a: Sequence[float], b: Sequence[float], n_resamples: int = 2000, level: float = 0.95,
                      seed: int = 0) -> dict:
    """Mean of b - a over paired items with its percentile bootstrap interval (items resampled as pairs)."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(diff) == 0:
        return {"mean": float("nan"), "ci": (float("nan"), float("nan")), "n": 0}
    low, high = bootstrap_ci(diff, n_resamples, level, seed)
    return {"mean": float(diff.mean()), "ci": (low, high), "n": len(diff)}


def paired_bootstrap_test(a: Sequence[float], b: Sequence[float], n_resamples: int = 10000, level: float = 0.95,
                          seed: int = 0) -> dict:
    """`paired_difference` (mean of b - a over paired items, percentile bootstrap interval) with the two-sided
    p that matches the interval: twice the share of resampled means on the far side of 0, counted as
    (1 + k) / (1 + resamples) so that it is never 0; the interval excludes 0 about when p < 1 - level. For
    outcomes that need not be 0/1 (e.g. a mean over several runs per item), where McNemar's test does not
    apply; like any bootstrap, approximate on few items."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    if len(diff) == 0:
        return {"mean": float("nan"), "ci": (float("nan"), float("nan")), "p": 1.0, "n": 0}
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), (n_resamples, len(diff)))].mean(1)
    far = min(int(np.sum(means <= 1e-12)), int(np.sum(means >= -1e-12)))  # a mean of 0 counts on both sides
    tail = (1 - level) / 2
    return {"mean": float(diff.mean()), "ci": (float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))),
            "p": min(1.0, 2 * (1 + far) / (1 + n_resamples)), "n": len(diff)}


def items_needed(effect: float, change_rate: float | None = None, alpha: float = 0.05, power: float = 0.8) -> int:
    """Paired items a two-sided test at `alpha` needs to detect a gain of `effect` (a share, e.g. 0.05) with
    `power`, when `change_rate` of the items change outcome between the two settings (normal approximation of
    McNemar's test). Without a rate, the fewest possible: every changed item a fix (rate = effect)."""
    if not 0 < effect < 1:
        raise ValueError(f"effect must be a share in (0, 1), got {effect}.")
    rate = effect if change_rate is None else max(change_rate, effect)
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return math.ceil(z * z * (rate - effect * effect) / (effect * effect))


def detectable_effect(n: int, change_rate: float | None = None, alpha: float = 0.05, power: float = 0.8) -> float:
    """The reverse of `items_needed`: the smallest difference (a share) that a two-sided test at `alpha` on `n`
    paired items detects with `power`, when `change_rate` is the mean squared per-item difference (for 0/1
    outcomes: the share of items that change). Without a rate, the fewest possible: every change in one
    direction."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}.")
    z2 = (NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)) ** 2
    lowest = z2 / (n + z2)  # a rate equal to the effect
    if change_rate is None or change_rate <= 0:
        return min(1.0, lowest)
    effect = math.sqrt(z2 * change_rate / (n + z2))
    return min(1.0, effect if effect <= change_rate else lowest)


def power_at(n: int, effect: float, change_rate: float | None = None, alpha: float = 0.05) -> float:
    """The power of a two-sided test at `alpha` on `n` paired items to detect a gain of `effect` (a share) when
    `change_rate` of the items change outcome: the normal approximation of McNemar's test that `items_needed`
    and `detectable_effect` invert (without a rate, the most it can be: every changed item a fix)."""
    if not 0 < effect < 1 or n < 1:
        raise ValueError(f"power_at needs an effect in (0, 1) and n >= 1, got {effect} and {n}.")
    rate = effect if change_rate is None else max(change_rate, effect)
    z = math.sqrt(n * effect * effect / (rate - effect * effect)) - NormalDist().inv_cdf(1 - alpha / 2)
    return NormalDist().cdf(z)


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); nan if either side is constant."""
    if len(x) != len(y) or len(x) < 2:
        raise ValueError("rank_correlation needs two sequences of equal length >= 2.")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: Sequence[float]) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values))
    for value in np.unique(values):  # ties share their mean rank
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks
