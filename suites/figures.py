"""A run's figures, each computed once: every model's retention of the dense score, its margin above
chance, the paired differences and ratios between two models, and whether a speed-up is plausible.

The verdicts, the report's tables and plots, the checks and `laco compare` read them here; none of
them bootstraps on its own. Every interval is the paired one of `suites.statistics` over the units
the two models share (items, windows, rounds), with the claims file's resamples and seed, so one
figure has one value wherever it is shown.

Retention, in the papers' senses and ours:
- Per. (the LaCo paper's Table 2): the mean over benchmarks of pruned score / dense score;
- of the average (CoMe's abstract): the average score over the dense average;
- above chance: (avg − chance) / (dense avg − chance), which is 0 for a model that guesses.
Each is computed over the benchmarks where dense is above chance (the 95% interval of dense − chance
lies above 0): on a benchmark where dense itself guesses there is nothing to keep, and a near-chance
dense score would make a guessing model look as if it kept most of it. The others are left out, with
the reason (`left_out`).

Plausibility: a step's time is per-layer overhead plus FLOP-proportional work, so a measured speed-up
lies at most at the larger of the FLOP ratio and the layer ratio (`evidence.speedup_bounds`); a
speed-up whose whole interval lies above that ceiling is noise ("implausible: noise") and decides
nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from suites import evidence as ev
from suites import stages
from suites import statistics as st
from suites.evidence import DENSE, NotMeasured, Run

T = TypeVar("T")


@dataclass(frozen=True)
class Retention:
    """A model's share of the dense score on the items both answered, with 95% paired intervals."""

    per: st.Interval  # mean over benchmarks of pruned / dense (the paper's Per.)
    above_chance: st.Interval  # (avg − chance) / (dense avg − chance)
    tasks: int  # benchmarks both answered where dense is above chance
    of_average: st.Interval | None = None  # avg / dense avg
    left_out: dict[str, str] | None = None  # benchmarks left out (dense not above chance) -> why


@dataclass(frozen=True)
class Speedup:
    """subject / other tokens/s over shared rounds, beside what the two models' sizes allow."""

    interval: st.Interval
    ideal: float | None  # the compute-bound ideal: other's FLOPs / subject's
    bound: float | None  # the ceiling: the larger of the ideal and the layer ratio

    @property
    def implausible(self) -> bool:
        """The whole interval lies above the ceiling: timing noise, not a measurement."""
        return self.bound is not None and self.interval.low > self.bound


class Figures:
    """The figures of one run; each is computed on first use and kept (a missing one: its reason)."""

    def __init__(self, run: Run, resamples: int = st.RESAMPLES, seed: int = st.SEED):
        self.run, self.resamples, self.seed = run, resamples, seed
        self._kept: dict[tuple, tuple] = {}

    def _once(self, what: tuple, compute: Callable[[], T]) -> T:
        if what not in self._kept:
            try:
                self._kept[what] = (compute(), None)
            except NotMeasured as exc:
                self._kept[what] = (None, str(exc))
        value, missing = self._kept[what]
        if missing is not None:
            raise NotMeasured(missing)
        return value

    def _bootstrap(self, items: dict, statistic: st.TaskStat) -> st.Interval:
        return st.bootstrap_tasks(items, statistic, self.resamples, self.seed)

    # -- accuracy ---------------------------------------------------------------------------------
    def paired(self, *keys: str, task: str | None = None) -> dict[str, dict[str, np.ndarray]]:
        """{task: {key: outcomes, ..., "chance": ...}} on the items every model answered (evidence.paired_items),
        over every task, or over one (which another task's failure leaves judged)."""
        tasks = None if task is None else [task]
        return self._once(("items", keys, task), lambda: ev.paired_items(self.run, list(keys), tasks))

    def average(self, key: str, tasks: list[str] | None = None, of: str = "score") -> float | None:
        """A model's mean score (or `of="chance_level"`) over `tasks` (default: its own), None when it
        lacks one of them: the benchmark average, every benchmark weighing alike."""
        items = ev.task_items(self.run, key)
        tasks = list(items) if tasks is None else tasks
        return float(np.mean([getattr(items[t], of) for t in tasks])) if all(t in items for t in tasks) else None

    def kept(self, key: str, tasks: list[str]) -> dict[str, float]:
        """Score / dense score per benchmark (the point values the report's retention plot draws)."""
        items, dense = ev.task_items(self.run, key), ev.task_items(self.run, DENSE)
        return {t: items[t].score / dense[t].score for t in tasks if t in items and t in dense and dense[t].score}

    def dense_at_chance(self) -> dict[str, str]:
        """The benchmarks where dense is not above chance (its paired 95% interval of score − chance reaches
        0), each with the reason: left out of every retention figure and claim."""
        def compute() -> dict[str, str]:
            out = {}
            for task in self.paired(DENSE):
                margin = self.margin(DENSE, task)
                if margin.low <= 0:
                    out[task] = f"{task}: dense not above chance ({margin.fmt('+.1f', 100)} pt)"
            return out

        return self._once(("dense at chance",), compute)

    def left_out(self, key: str) -> dict[str, str]:
        """Of the benchmarks key answered beside dense, those left out of its retention (dense at chance)."""
        shared = self.paired(key, DENSE)
        return {t: why for t, why in self.dense_at_chance().items() if t in shared}

    def retained(self, key: str) -> dict[str, dict[str, np.ndarray]]:
        """The items key and dense share on the benchmarks where dense is above chance."""
        def compute() -> dict[str, dict[str, np.ndarray]]:
            items = {t: v for t, v in self.paired(key, DENSE).items() if t not in self.dense_at_chance()}
            if not items:
                raise NotMeasured(f"dense is not above chance on any benchmark {key} answered: nothing to keep")
            return items

        return self._once(("retained", key), compute)

    def retention(self, key: str) -> Retention:
        def compute() -> Retention:
            items = self.retained(key)

            def per(m):
                return np.mean([st.safe_ratio(m[t][key], m[t][DENSE]) for t in sorted(m)], axis=0)

            def of_average(m):
                return st.safe_ratio(st.task_average(m, key), st.task_average(m, DENSE))

            def above(m):
                chance = st.task_average(m, "chance")
                return st.safe_ratio(st.task_average(m, key) - chance, st.task_average(m, DENSE) - chance)

            return Retention(self._bootstrap(items, per), self._bootstrap(items, above), len(items),
                             self._bootstrap(items, of_average), self.left_out(key))

        return self._once(("retention", key), compute)

    def task_retention(self, key: str, task: str) -> st.Interval:
        """Score / dense score on one benchmark."""
        def compute() -> st.Interval:
            one = {task: self.paired(key, DENSE, task=task)[task]}
            return self._bootstrap(one, lambda m: st.safe_ratio(m[task][key], m[task][DENSE]))

        return self._once(("task retention", key, task), compute)

    def margin(self, key: str, task: str | None = None) -> st.Interval:
        """Score − chance on the items the model shares with dense: the average over benchmarks, or one."""
        def compute() -> st.Interval:
            items = self.paired(*dict.fromkeys((key, DENSE)), task=task)
            if task is not None:
                items = {task: items[task]}
            return self._bootstrap(items, lambda m: st.task_average(m, key) - st.task_average(m, "chance"))

        return self._once(("margin", key, task), compute)

    def difference(self, a: str, b: str, scale: float = 1.0) -> st.Interval:
        """Average score of a − scale × that of b, paired over the items both answered."""
        def compute() -> st.Interval:
            return self._bootstrap(self.paired(a, b), lambda m: st.task_average(m, a) - scale * st.task_average(m, b))

        return self._once(("difference", a, b, scale), compute)

    # -- perplexity, pruning time, throughput --------------------------------------------------------
    def ppl_ratio(self, a: str, b: str) -> st.Interval:
        """PPL(a) / PPL(b) on the windows both read."""
        def compute() -> st.Interval:
            na, nb, tokens = ev.paired_windows(self.run, a, b)
            return st.perplexity_ratio(na, nb, tokens)

        return self._once(("ppl", a, b), compute)

    def loss_ratio(self, a: str, b: str) -> st.Interval:
        """The training loss a reached / b's, over the last logged steps both share (paired by step)."""
        def compute() -> st.Interval:
            la, lb, steps = stages.paired_loss_tail(self.run, a, b)
            return st.log_t_interval(np.log(la) - np.log(lb), f"paired over the last {len(steps)} logged steps")

        return self._once(("loss", a, b), compute)

    def pruning_time_ratio(self, a: str, b: str) -> st.Interval:
        """Median pruning seconds of a / b: paired over rounds where both were timed in the same ones."""
        def compute() -> st.Interval:
            xa, xb, paired = ev.paired_pruning_seconds(self.run, a, b)
            ratio = st.round_ratio if paired else st.independent_ratio
            return ratio(xa, xb)

        return self._once(("pruning time", a, b), compute)

    def bounds(self, a: str, b: str, rate: str) -> tuple[float | None, float | None]:
        """(ideal, ceiling) of a speed-up of a over b (evidence.speedup_bounds); (None, None) without FLOPs."""
        return self._once(("bounds", a, b, rate), lambda: ev.speedup_bounds(self.run, a, b, rate))

    def speedup(self, a: str, b: str, engine: str, rate: str) -> Speedup:
        """Tokens/s of a / b in the interleaved rounds of one engine, with its ideal and ceiling."""
        def compute() -> Speedup:
            ra, rb = ev.paired_rounds(self.run, a, b, engine, rate)
            return Speedup(st.round_ratio(ra, rb), *self.bounds(a, b, rate))

        return self._once(("speedup", a, b, engine, rate), compute)
