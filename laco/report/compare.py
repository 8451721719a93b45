"""Run A (baseline) vs run B (new): per-metric deltas with tolerances from suites/tolerances.toml.

A metric regresses when B is worse than A beyond its tolerance:
- accuracy (every benchmark, and the average over the benchmarks both runs have): lower by more
  than k * sqrt(se_a^2 + se_b^2) of lm-eval's stderr;
- every other metric: worse by more than a ratio (B/A for lower-is-better, A/B for
  higher-is-better), since timings on shared machines are only comparable as ratios.
A measurement A has and B lacks is "lost" (a regression unless allowed), and a claim that passed
in A and fails in B is a regression too. Models are matched by key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from laco import LacoError
from laco.report.judge import FAIL, PASS, Claims, NotMeasured, judge_run, read_toml, task_scores
from laco.report.render import table
from laco.report.runs import Run

OK, BETTER, REGRESSION, LOST, NEW = "ok", "better", "REGRESSION", "lost", "new"


@dataclass(frozen=True)
class Tolerance:
    metric: str  # "accuracy", or "<measurement>.<field>[.<stat>]" e.g. "throughput_hf.output_tokens_per_s"
    better: str  # "higher" | "lower"
    ratio: float = 1.0  # allowed worsening factor (>= 1) for ratio metrics
    stderr_k: float = 2.0  # accuracy only


@dataclass
class Delta:
    model: str
    metric: str
    a: float | None
    b: float | None
    change: str
    tolerance: str
    status: str


def load_tolerances(path: str | Path) -> list[Tolerance]:
    path = Path(path)
    data = read_toml(path, "tolerances")
    tolerances = []
    for d in data.get("metric", []):
        if d.get("better") not in ("higher", "lower"):
            raise LacoError(f"{path}: metric {d.get('name', '?')!r}: better must be higher or lower")
        if float(d.get("ratio", 1.0)) < 1.0:
            raise LacoError(f"{path}: metric {d['name']!r}: ratio is an allowed worsening factor, >= 1")
        tolerances.append(Tolerance(d["name"], d["better"], float(d.get("ratio", 1.0)), float(d.get("stderr_k", 2.0))))
    return tolerances


def value(run: Run, key: str, metric: str) -> float | None:
    """A number of a run by path: "perplexity.windows.ppl", "memory.param_mb",
    "throughput_hf.output_tokens_per_s" (its median), "pruning_time.seconds"."""
    name, *path = metric.split(".")
    m = run.ok(key, name)
    v = m.values if m else None
    for part in path:
        v = v.get(part) if isinstance(v, dict) else None
    if isinstance(v, dict):
        v = v.get("median")
    return float(v) if isinstance(v, (int, float)) else None


def _accuracy_deltas(a: Run, b: Run, key: str, tol: Tolerance) -> list[Delta]:
    try:
        sa = task_scores(a, key)
    except NotMeasured:
        return []
    try:
        sb = task_scores(b, key)
    except NotMeasured:
        return [Delta(key, "accuracy", None, None, "-", "-", LOST)]
    deltas = []
    common = [t for t in sa if t in sb]
    rows = {t: (sa[t], sb[t]) for t in common}
    if common:
        n = len(common)
        avg = lambda s: (sum(s[t][0] for t in common) / n,  # noqa: E731
                         math.sqrt(sum((s[t][1] or 0) ** 2 for t in common)) / n)
        rows["average"] = (avg(sa), avg(sb))
    for task, ((va, sea), (vb, seb)) in rows.items():
        bound = tol.stderr_k * math.sqrt((sea or 0) ** 2 + (seb or 0) ** 2)
        diff = vb - va
        status = REGRESSION if diff < -bound else BETTER if diff > bound else OK
        deltas.append(Delta(key, f"accuracy.{task}", va, vb, f"{100 * diff:+.1f} pt",
                            f"±{100 * bound:.1f} pt ({tol.stderr_k:g}·se)", status))
    deltas += [Delta(key, f"accuracy.{t}", sa[t][0], None, "-", "-", LOST) for t in sa if t not in sb]
    return deltas


def _ratio_delta(a: Run, b: Run, key: str, tol: Tolerance) -> Delta | None:
    va, vb = value(a, key, tol.metric), value(b, key, tol.metric)
    if va is None and vb is None:
        return None
    if va is None:
        return Delta(key, tol.metric, None, vb, "-", "-", NEW)
    if vb is None:
        return Delta(key, tol.metric, va, None, "-", "-", LOST)
    ratio = vb / va if va else math.inf
    worse = ratio if tol.better == "lower" else (1 / ratio if ratio else math.inf)
    status = REGRESSION if worse > tol.ratio else BETTER if worse < 1 / tol.ratio else OK
    return Delta(key, tol.metric, va, vb, f"x{ratio:.3f}", f"{tol.better} is better, worse by ≤ x{tol.ratio:g}", status)


def compare_runs(a: Run, b: Run, tolerances: list[Tolerance], claims: Claims | None = None) -> list[Delta]:
    deltas: list[Delta] = []
    for key in a.models:
        if key not in b.models:
            deltas.append(Delta(key, "model", None, None, "-", "-", LOST))
            continue
        for tol in tolerances:
            if tol.metric == "accuracy":
                deltas += _accuracy_deltas(a, b, key, tol)
            elif (d := _ratio_delta(a, b, key, tol)) is not None:
                deltas.append(d)
    if claims is not None:
        before = {(v.claim.id, v.subject): v.status for v in judge_run(a, claims)}
        for v in judge_run(b, claims):
            old = before.get((v.claim.id, v.subject))
            if old == PASS and v.status == FAIL:
                deltas.append(Delta(v.subject, f"claim {v.claim.id}", None, None, f"{old} → {v.status}", "-",
                                    REGRESSION))
    return deltas


def regressions(deltas: list[Delta], allow_lost: bool = False) -> list[Delta]:
    bad = {REGRESSION} if allow_lost else {REGRESSION, LOST}
    return [d for d in deltas if d.status in bad]


def render_compare(a: Run, b: Run, deltas: list[Delta], allow_lost: bool = False) -> str:
    bad = regressions(deltas, allow_lost)
    changed = [k for k in a.models if k in b.models and a.models[k].fingerprint != b.models[k].fingerprint]
    lines = [
        f"# laco compare: `{a.id}` → `{b.id}`",
        "",
        f"**{'REGRESSION' if bad else 'no regression'}**: {len(bad)} of {len(deltas)} compared values "
        f"regressed{' or were lost' if not allow_lost else ''}.",
        "",
        f"Profiles: {a.profile_name} → {b.profile_name}."
        + (f" Models whose fingerprint changed: {', '.join(changed)}." if changed else ""),
        "",
    ]
    if a.profile_name != b.profile_name:
        lines += ["Warning: the runs used different profiles; differences may come from the settings.", ""]
    order = {REGRESSION: 0, LOST: 1, BETTER: 2, NEW: 3, OK: 4}
    rows = [[d.model, d.metric, _fmt(d.a, d.metric), _fmt(d.b, d.metric), d.change, d.tolerance, _status(d.status)]
            for d in sorted(deltas, key=lambda d: order[d.status])]
    lines += ["Accuracy in %; its tolerance is lm-eval's stderr of both runs. Other metrics as measured "
              "(MB, tokens/s, seconds); their tolerance is a ratio.", "",
              table(rows, ["model", "metric", "A", "B", "change", "tolerance", "status"])]
    return "\n".join(lines) + "\n"


def _fmt(x: float | None, metric: str) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f}" if metric.startswith("accuracy.") else f"{x:.4g}"


def _status(s: str) -> str:
    return f"**{s}**" if s in (REGRESSION, LOST) else s
