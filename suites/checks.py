"""Checks of a run's figures against what must hold, so the bench catches its own noise and mistakes.

- every model was scored on the same items as the dense model;
- models with identical weights measure identically (same answers, same perplexity windows) and
  their throughput ratio interval contains 1, otherwise the timing noise exceeds the interval;
- a benchmark where the dense model itself is not above chance carries no retention signal;
- a speed-up whose whole interval lies above its ceiling (the larger of the FLOP ratio and the layer
  ratio, `evidence.speedup_bounds`) is noise, not a measurement (decided in `suites.figures`,
  flagged in the verdicts and the efficiency table).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from suites import evidence as ev
from suites.evidence import DENSE, NotMeasured, Run
from suites.figures import Figures


@dataclass
class Check:
    name: str
    ok: bool
    detail: str


def identical_weight_groups(run: Run) -> list[list[str]]:
    """Models whose saved weights have the same digest (dense by its source digest is not compared)."""
    groups: dict[str, list[str]] = {}
    for key, model in run.models.items():
        if model.weights:
            groups.setdefault(model.weights, []).append(key)
    return [keys for keys in groups.values() if len(keys) > 1]


def identical_weights_checks(figures: Figures) -> list[Check]:
    checks = []
    for keys in identical_weight_groups(figures.run):
        for b in keys[1:]:
            checks += _twin_checks(figures, keys[0], b)
    return checks


def _twin_checks(figures: Figures, a: str, b: str) -> list[Check]:
    """Two models with the same weights: the same answers, the same window NLL, throughput ratio about 1."""
    run, pair, checks = figures.run, f"{a} = {b} (same weights)", []
    try:
        items = figures.paired(a, b)
        same = all(np.array_equal(items[t][a], items[t][b]) for t in items)
        checks.append(Check(f"{pair}: accuracy", same, "identical answers on every item" if same else
                            "answers differ although the weights are identical"))
    except NotMeasured as exc:
        checks.append(Check(f"{pair}: accuracy", True, f"not compared: {exc}"))
    try:
        na, nb, _ = ev.paired_windows(run, a, b)
        same = np.allclose(na, nb, rtol=1e-6, atol=1e-6)
        ratio = figures.ppl_ratio(a, b)
        checks.append(Check(f"{pair}: perplexity", same, f"PPL ratio ×{ratio.fmt('.4f')}: " + (
            "identical window NLL" if same else "window NLL differs although the weights are identical")))
    except NotMeasured as exc:
        checks.append(Check(f"{pair}: perplexity", True, f"not compared: {exc}"))
    for engine in ("hf", "vllm"):
        try:
            interval = figures.speedup(a, b, engine, "decode_tokens_per_s").interval
        except NotMeasured:
            continue
        checks.append(Check(f"{pair}: {engine} decode tok/s", interval.contains(1.0),
                            f"ratio ×{interval.fmt('.3f')}" + ("" if interval.contains(1.0) else
                                                                ": the timing noise exceeds the interval")))
    return checks


def dense_near_chance(figures: Figures) -> list[Check]:
    """Per benchmark: is the dense model above chance (its interval of score - chance above 0)?"""
    try:
        items = ev.task_items(figures.run, DENSE)
    except NotMeasured:
        return []
    checks = []
    for task, t in items.items():
        interval = figures.margin(DENSE, task)
        checks.append(Check(f"dense above chance on {task}", interval.low > 0,
                            f"{100 * t.score:.1f} vs chance {100 * t.chance_level:.1f}: {interval.fmt('+.1f', 100)} pt "
                            f"(n={t.n})"))
    return checks


def run_checks(figures: Figures) -> list[Check]:
    problems = ev.item_check(figures.run)
    items = [Check("same items as dense", not problems, "; ".join(problems) or "every model answered the dense model's items")]
    return items + identical_weights_checks(figures) + dense_near_chance(figures)
