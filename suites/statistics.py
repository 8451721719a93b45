"""Paired intervals for the verdicts: seeded bootstrap over the units two models share, and exact tests.

Models of one run answer the same items, read the same perplexity windows and are timed in the same
interleaved rounds, so every comparison resamples those shared units, keeping the pairing:

- accuracy: items are resampled *within each task* (a stratified bootstrap: each task keeps its
  number of items, so tasks weigh in the average as they do in the point estimate); every model's
  per-task score is recomputed on the same resampled items;
- perplexity: windows are resampled, and every model's summed NLL is recomputed on the same windows;
- throughput: rounds are resampled, round i of every model together;
- pruning time: repeats are independent per method (not paired), each resampled on its own.

The interval is the percentile interval of the statistic over the resamples (order statistics, no
interpolation, so an infinite or undefined resample is kept visible rather than averaged away). Two
models with identical answers give a difference of exactly 0 in every resample, hence [0, 0].

The stratified resampling is written here (numpy's Generator draws the indices) because
scipy.stats.bootstrap resamples one sample as a whole and cannot keep strata; exact tests come from
scipy (`binomtest` for McNemar's test on discordant pairs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

CONFIDENCE = 0.95
RESAMPLES = 4000  # the issue asks for at least 2,000
SEED = 20240219  # fixed: the same run always gives the same interval


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95% interval; `undefined` counts resamples where it had no value."""

    estimate: float
    low: float
    high: float
    resamples: int = 0
    undefined: int = 0
    method: str = "paired bootstrap"

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, x: float) -> bool:
        return self.low <= x <= self.high

    def fmt(self, spec: str = ".3f", scale: float = 1.0) -> str:
        def f(x: float) -> str:
            return ("-inf" if x < 0 else "inf") if math.isinf(x) else format(scale * x, spec)

        return f"{f(self.estimate)} [{f(self.low)}, {f(self.high)}]"


def exact(value: float, method: str = "exact") -> Interval:
    """A deterministic figure (a parameter count): its interval is the point itself."""
    return Interval(value, value, value, 0, 0, method)


def percentile_interval(estimate: float, draws: np.ndarray, method: str) -> Interval:
    """The central 95% of the bootstrap draws; NaN draws (undefined statistic) widen it to +-inf."""
    draws = np.asarray(draws, dtype=float)
    undefined = int(np.isnan(draws).sum())
    if undefined:
        return Interval(estimate, -math.inf, math.inf, len(draws), undefined, method)
    alpha = (1 - CONFIDENCE) / 2
    low = float(np.quantile(draws, alpha, method="inverted_cdf"))
    high = float(np.quantile(draws, 1 - alpha, method="inverted_cdf"))
    return Interval(estimate, min(low, estimate), max(high, estimate), len(draws), 0, method)


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(SEED if seed is None else seed)


# --- accuracy: stratified paired bootstrap over items -------------------------------------------

TaskStat = Callable[[Mapping[str, Mapping[str, np.ndarray]]], np.ndarray]


def stratified_means(items: Mapping[str, Mapping[str, np.ndarray]], resamples: int = RESAMPLES,
                     seed: int | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Per task and per series (a model's 0/1 outcomes, a chance level per item, ...), the mean over
    the task's items of every bootstrap resample, with the same resampled items for every series.

    items: {task: {series: array of one value per item}}; all series of a task have one length.
    Returns {task: {series: array(resamples)}}."""
    rng = _rng(seed)
    out: dict[str, dict[str, np.ndarray]] = {}
    for task in sorted(items):  # sorted: the draws do not depend on the caller's dict order
        series = items[task]
        n = len(next(iter(series.values())))
        if any(len(v) != n for v in series.values()):
            raise ValueError(f"{task}: series differ in length")
        index = rng.integers(0, n, size=(resamples, n))
        out[task] = {name: np.asarray(values, dtype=float)[index].mean(axis=1) for name, values in series.items()}
    return out


def bootstrap_tasks(items: Mapping[str, Mapping[str, np.ndarray]], statistic: TaskStat,
                    resamples: int = RESAMPLES, seed: int | None = None) -> Interval:
    """`statistic` maps {task: {series: per-task mean(s)}} to a value (vectorised over resamples): its
    value on the items as they are, and its stratified paired bootstrap interval."""
    point = {t: {s: np.asarray([np.mean(np.asarray(v, dtype=float))]) for s, v in series.items()}
             for t, series in items.items()}
    estimate = float(np.asarray(statistic(point))[0])
    draws = statistic(stratified_means(items, resamples, seed))
    return percentile_interval(estimate, draws, f"paired bootstrap over items, stratified by task ({resamples} resamples)")


def task_average(means: Mapping[str, Mapping[str, np.ndarray]], series: str) -> np.ndarray:
    """The benchmark average: the mean over tasks of each task's mean (every task weighs alike)."""
    return np.mean([means[t][series] for t in sorted(means)], axis=0)


def safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den where den > 0, +inf where only den is 0, NaN (undefined) where both are 0."""
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = num / den
    return np.where(den > 0, out, np.where(num > 0, np.inf, np.where(num < 0, -np.inf, np.nan)))


def mcnemar(a: Sequence[int], b: Sequence[int]) -> dict:
    """McNemar's exact test on paired 0/1 outcomes: of the discordant items, how many favour b.
    Returns {b_only, a_only, p_value} (two-sided binomial test at 1/2)."""
    a, b = np.asarray(a, dtype=int), np.asarray(b, dtype=int)
    b_only, a_only = int(((b == 1) & (a == 0)).sum()), int(((a == 1) & (b == 0)).sum())
    discordant = a_only + b_only
    p = 1.0 if discordant == 0 else float(scipy_stats.binomtest(b_only, discordant, 0.5).pvalue)
    return {"b_only": b_only, "a_only": a_only, "p_value": p}


# --- perplexity: paired bootstrap over windows ----------------------------------------------------

def perplexity_ratio(nll_a: Sequence[float], nll_b: Sequence[float], tokens_per_window: int,
                     resamples: int = RESAMPLES, seed: int | None = None) -> Interval:
    """PPL(a) / PPL(b) on the same windows = exp(mean NLL per token of a - that of b); windows are
    resampled together for both models."""
    a, b = np.asarray(nll_a, dtype=float), np.asarray(nll_b, dtype=float)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("perplexity windows differ in number")
    return _exp_mean((a - b) / tokens_per_window, resamples, seed,
                     f"paired bootstrap over {len(a)} windows ({resamples} resamples)")


# --- throughput: paired bootstrap over rounds -----------------------------------------------------

def round_ratio(rates_a: Sequence[float], rates_b: Sequence[float], resamples: int = RESAMPLES,
                seed: int | None = None) -> Interval:
    """The ratio a / b of rates measured in the same interleaved rounds: the geometric mean of the
    per-round ratios (round i of a beside round i of b), with the rounds resampled."""
    a, b = np.asarray(rates_a, dtype=float), np.asarray(rates_b, dtype=float)
    if len(a) != len(b) or len(a) == 0:
        raise ValueError("the two models were not timed in the same rounds")
    return _exp_mean(np.log(a) - np.log(b), resamples, seed,
                     f"paired bootstrap over {len(a)} interleaved rounds ({resamples} resamples)")


def _exp_mean(log_ratios: np.ndarray, resamples: int, seed: int | None, method: str) -> Interval:
    """exp(mean) of per-unit log ratios of two models, the units resampled together (pairing kept)."""
    estimate = float(np.exp(log_ratios.mean()))
    index = _rng(seed).integers(0, len(log_ratios), size=(resamples, len(log_ratios)))
    return percentile_interval(estimate, np.exp(log_ratios[index].mean(axis=1)), method)


def independent_ratio(values_a: Sequence[float], values_b: Sequence[float], resamples: int = RESAMPLES,
                      seed: int | None = None) -> Interval:
    """median(a) / median(b) for repeats that are not paired: each series resampled on its own."""
    a, b = np.asarray(values_a, dtype=float), np.asarray(values_b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("no repeats")
    rng = _rng(seed)
    estimate = float(np.median(a) / np.median(b))
    draws = (np.median(a[rng.integers(0, len(a), size=(resamples, len(a)))], axis=1)
             / np.median(b[rng.integers(0, len(b), size=(resamples, len(b)))], axis=1))
    return percentile_interval(estimate, draws, f"bootstrap of medians, {len(a)} and {len(b)} independent repeats")


# --- how many items would decide ------------------------------------------------------------------

def items_to_decide(interval: Interval, threshold: float, items: Mapping[str, int]) -> dict[str, int] | None:
    """Items per task at which an interval of the observed half-width would clear the threshold at
    the observed effect, assuming the half-width shrinks as 1/sqrt(n). None when there is no effect
    (the estimate sits on the threshold) or the interval is unbounded."""
    effect = abs(interval.estimate - threshold)
    if effect == 0 or not math.isfinite(interval.low) or not math.isfinite(interval.high):
        return None
    half = interval.estimate - interval.low if interval.estimate > threshold else interval.high - interval.estimate
    factor = (half / effect) ** 2
    return {task: max(n, math.ceil(n * factor)) for task, n in items.items()}
