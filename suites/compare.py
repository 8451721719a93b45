"""`laco compare A B`: run A (the baseline, e.g. last night's) against run B (the new one), model by model.

Paired wherever the two runs share units, with tolerances from tolerances.toml:
- accuracy per task: the same model key answered the same items in both runs, so each task is tested
  with McNemar's exact test on the items whose answer changed; a significant drop is a regression;
- the average over tasks: stratified paired bootstrap of B − A; an interval wholly below 0 is a regression;
- perplexity: the same windows, paired bootstrap of PPL(B) / PPL(A); wholly above the tolerance: regression;
- parameter memory: exact; peak memory and pruning time: ratios with a stated tolerance;
- throughput: tokens/s of different nights are not comparable directly (different machine load), so a
  pruned model's speed-up over its own run's dense model (paired rounds) is compared: B's interval wholly
  below A's is a regression;
- absolute rates (dense's own tokens/s, pruning seconds): each run records a machine probe (bench/probe.py),
  and B's rates are divided by the probes' speed ratio before they are compared with A's, against a
  tolerance for what the probe leaves (`normalised_ratio`); a run without a probe (older runs) is compared
  raw, against the loose tolerance of a machine that may have changed speed (`dense_ratio`, `ratio`);
- claims: a verdict going from PASS to FAIL is a regression; a move between INCONCLUSIVE and anything is
  reported, not a regression.
A measurement A has and B lacks is "lost" (a regression unless allowed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import Field

from laco.config import Strict, load
from suites import evidence as ev
from suites import statistics as st
from suites.claims import Claims, suites_data
from suites.evidence import DENSE, NotMeasured, Run
from suites.figures import Figures
from suites.markdown import pct, table
from suites.outcomes import FAIL, INCONCLUSIVE, PASS
from suites.verdicts import judge_run

OK, BETTER, REGRESSION, LOST, NEW, CHANGED, NOT_PAIRED = "ok", "better", "REGRESSION", "lost", "new", "changed", "not paired"


class AccuracyTolerance(Strict):
    alpha: float = Field(default=0.05, gt=0, lt=1)  # McNemar per task


class RatioTolerance(Strict):
    ratio: float = Field(ge=1)  # allowed worsening factor


class MemoryTolerance(Strict):
    param_ratio: float = Field(default=1.001, ge=1)
    peak_ratio: float = Field(default=1.15, ge=1)


class ThroughputTolerance(Strict):
    dense_ratio: float = Field(default=1.35, ge=1)  # dense's own tokens/s from one night to the next, raw
    normalised_ratio: float = Field(default=1.15, ge=1)  # the same, both runs normalised by their machine probes


class TimeTolerance(Strict):
    ratio: float = Field(default=1.5, ge=1)  # raw seconds (a run without a probe)
    normalised_ratio: float = Field(default=1.25, ge=1)  # seconds normalised by the machine probes


class Tolerances(Strict):
    accuracy: AccuracyTolerance = Field(default_factory=AccuracyTolerance)
    perplexity: RatioTolerance = Field(default_factory=lambda: RatioTolerance(ratio=1.02))
    memory: MemoryTolerance = Field(default_factory=MemoryTolerance)
    throughput: ThroughputTolerance = Field(default_factory=ThroughputTolerance)
    pruning_time: TimeTolerance = Field(default_factory=TimeTolerance)


def load_tolerances(path: str | Path | None = None) -> Tolerances:
    return load(path or suites_data("tolerances.toml"), Tolerances, "tolerances")


def machine_speed(run: Run) -> float | None:
    """One figure of how fast the run's machine was (its probe, bench/probe.py): the geometric mean of the
    matmul rate in the run's dtype (bf16 for 16-bit runs) and the memory bandwidth; None without a probe."""
    probe = run.meta.get("probe") or {}
    dtype = (run.profile.get("model") or {}).get("dtype")
    matmul = probe.get("bf16_gflops" if dtype in ("bfloat16", "float16") else "fp32_gflops")
    bandwidth = probe.get("memory_gbps")
    if not matmul or not bandwidth or matmul <= 0 or bandwidth <= 0:
        return None
    return math.sqrt(matmul * bandwidth)


def machine_ratio(a: Run, b: Run) -> float | None:
    """B's machine speed over A's (0.5: B's machine ran at half A's speed); None unless both have a probe."""
    sa, sb = machine_speed(a), machine_speed(b)
    return sb / sa if sa and sb else None


def normalisation_text(a: Run, b: Run) -> str:
    """What `laco compare` (and the history) did with absolute rates, in one sentence."""
    ratio = machine_ratio(a, b)
    if ratio is not None:
        return (f"Absolute rates (dense tokens/s, pruning seconds) are compared after normalising by the machine probes: "
                f"B's machine ran at ×{ratio:.3g} A's speed (bench/probe.py); within-run ratios need no probe.")
    missing = " and ".join(f"`{r.id}`" for r in (a, b) if machine_speed(r) is None)
    return (f"{missing} recorded no machine probe (older runs): absolute rates (dense tokens/s, pruning seconds) are "
            "compared raw, with the loose tolerances of a machine that may have changed speed.")


@dataclass
class Delta:
    model: str
    metric: str
    a: str
    b: str
    change: str
    tolerance: str
    status: str


class Comparison:
    def __init__(self, a: Run, b: Run, tol: Tolerances, claims: Claims, figures: dict[str, Figures] | None = None):
        """`figures`: each run's figures by run id, when the caller has them already (`laco history`)."""
        self.a, self.b, self.tol, self.claims = a, b, tol, claims
        self.resamples, self.seed = claims.statistics.resamples, claims.statistics.seed
        known = figures or {}
        self.figures_a, self.figures_b = (known.get(run.id) or Figures(run, self.resamples, self.seed) for run in (a, b))

    def deltas(self) -> list[Delta]:
        out: list[Delta] = []
        for key in self.a.models:
            if key not in self.b.models:
                out.append(Delta(key, "model", "present", "-", "-", "-", LOST))
                continue
            out += self.accuracy(key) + self.perplexity(key) + self.memory(key) + self.throughput(key)
            out += self.pruning_time(key)
        return out + self.claim_moves()

    def evidence(self, read: Callable[[Run, str], object], key: str, metric: str, shown: Callable[[object], str]):
        """(A's, B's, None) evidence of one model, or (.., .., the deltas to return instead): none when A has
        no such evidence, a lost measurement when only B lacks it."""
        try:
            va = read(self.a, key)
        except NotMeasured:
            return None, None, []
        try:
            return va, read(self.b, key), None
        except NotMeasured as exc:
            return va, None, [Delta(key, metric, shown(va), "-", "-", str(exc), LOST)]

    # -- accuracy --------------------------------------------------------------------------------
    def accuracy(self, key: str) -> list[Delta]:
        ia, ib, instead = self.evidence(ev.task_items, key, "accuracy", lambda _: "measured")
        if instead is not None:
            return instead
        deltas, paired = [], {}
        alpha = self.tol.accuracy.alpha
        for task, ta in ia.items():
            tb = ib.get(task)
            if tb is None:
                deltas.append(Delta(key, f"accuracy.{task}", pct(ta.score), "-", "-", "-", LOST))
                continue
            if (ta.doc_id, ta.doc_hash) != (tb.doc_id, tb.doc_hash):
                deltas.append(Delta(key, f"accuracy.{task}", pct(ta.score), pct(tb.score), "-", "items differ", NOT_PAIRED))
                continue
            paired[task] = {"a": ta.correct, "b": tb.correct, "chance": ta.chance}
            test = st.mcnemar(ta.correct, tb.correct)
            drop = tb.score - ta.score
            significant = test["p_value"] < alpha
            status = OK if not significant else REGRESSION if drop < 0 else BETTER
            deltas.append(Delta(key, f"accuracy.{task}", pct(ta.score), pct(tb.score), f"{100 * drop:+.1f} pt",
                                f"McNemar p={test['p_value']:.3g} ({test['a_only']} items lost, {test['b_only']} gained; "
                                f"α={alpha:g})", status))
        if paired:
            interval = st.bootstrap_tasks(paired, lambda m: st.task_average(m, "b") - st.task_average(m, "a"),
                                          self.resamples, self.seed)
            status = REGRESSION if interval.high < 0 else BETTER if interval.low > 0 else OK
            avg = lambda s: float(np.mean([paired[t][s].mean() for t in paired]))  # noqa: E731
            deltas.append(Delta(key, "accuracy.average", pct(avg("a")), pct(avg("b")),
                                f"{interval.fmt('+.1f', 100)} pt", f"paired bootstrap over items, {len(paired)} tasks",
                                status))
        return deltas

    # -- perplexity ------------------------------------------------------------------------------
    def perplexity(self, key: str) -> list[Delta]:
        wa, wb, instead = self.evidence(ev.windows, key, "perplexity", lambda w: f"{w['ppl']:.4g}")
        if instead is not None:
            return instead
        if (wa.get("window"), wa.get("n_windows")) != (wb.get("window"), wb.get("n_windows")):
            return [Delta(key, "perplexity", f"{wa['ppl']:.4g}", f"{wb['ppl']:.4g}", "-", "windows differ", NOT_PAIRED)]
        interval = st.perplexity_ratio(wb["nll"], wa["nll"], int(wa["tokens_per_window"]), self.resamples, self.seed)
        tol = self.tol.perplexity.ratio
        status = REGRESSION if interval.low > tol else BETTER if interval.high < 1 / tol else OK
        return [Delta(key, "perplexity", f"{wa['ppl']:.4g}", f"{wb['ppl']:.4g}", f"×{interval.fmt('.4g')}",
                      f"paired windows; regression when wholly above ×{tol:g}", status)]

    # -- memory, pruning time ----------------------------------------------------------------------
    def memory(self, key: str) -> list[Delta]:
        out = []
        for name, tol in (("param_mb", self.tol.memory.param_ratio), ("peak_mb", self.tol.memory.peak_ratio)):
            d = self.ratio_delta(key, "memory", name, tol, lower_is_better=True)
            if d:
                out.append(d)
        return out

    def pruning_time(self, key: str) -> list[Delta]:
        if key == DENSE:
            return []
        sa, sb, instead = self.evidence(ev.pruning_seconds, key, "pruning_time", lambda s: f"{np.median(s):.3g}")
        if instead is not None:
            return instead
        ratio = machine_ratio(self.a, self.b)
        normalised = [x * ratio for x in sb] if ratio else sb  # B's seconds on A's machine
        interval = st.independent_ratio(normalised, sa, self.resamples, self.seed)
        tol = self.tol.pruning_time.normalised_ratio if ratio else self.tol.pruning_time.ratio
        status = REGRESSION if interval.low > tol else BETTER if interval.high < 1 / tol else OK
        how = "normalised by the probes" if ratio else "raw: no probe"
        return [Delta(key, "pruning_time", f"{np.median(sa):.3g} s", f"{np.median(sb):.3g} s", f"×{interval.fmt('.3g')}",
                      f"{how}; regression when wholly above ×{tol:g}", status)]

    def ratio_delta(self, key: str, measurement: str, field_name: str, tol: float, lower_is_better: bool) -> Delta | None:
        ma, mb = self.a.ok(key, measurement), self.b.ok(key, measurement)
        va = ma and ma.values.get(field_name)
        vb = mb and mb.values.get(field_name)
        name = f"{measurement}.{field_name}"
        if not isinstance(va, (int, float)):
            return None
        if not isinstance(vb, (int, float)):
            return Delta(key, name, f"{va:.4g}", "-", "-", "-", LOST)
        ratio = vb / va if va else math.inf
        worse = ratio if lower_is_better else 1 / ratio
        status = REGRESSION if worse > tol else BETTER if worse < 1 / tol else OK
        return Delta(key, name, f"{va:.4g}", f"{vb:.4g}", f"×{ratio:.3f}", f"worse by ≤ ×{tol:g}", status)

    # -- throughput ----------------------------------------------------------------------------------
    def throughput(self, key: str) -> list[Delta]:
        out = []
        for engine in ("hf", "vllm"):
            name = f"throughput_{engine}"
            if self.a.ok(key, name) is None:
                continue
            if self.b.ok(key, name) is None:
                out.append(Delta(key, name, "measured", "-", "-", self.b.missing_reason(key, name), LOST))
                continue
            if key == DENSE:
                d = self.dense_rate(engine)
                if d:
                    out.append(d)
                continue
            try:
                ia, ib = (figures.speedup(key, DENSE, engine, "decode_tokens_per_s").interval
                          for figures in (self.figures_a, self.figures_b))
            except NotMeasured as exc:
                out.append(Delta(key, f"{name}.speedup", "-", "-", "-", str(exc), NOT_PAIRED))
                continue
            status = REGRESSION if ib.high < ia.low else BETTER if ib.low > ia.high else OK
            out.append(Delta(key, f"{name}.decode_speedup_vs_dense", f"×{ia.fmt('.3f')}", f"×{ib.fmt('.3f')}", "-",
                             "paired rounds within each run; regression when B's interval lies wholly below A's", status))
        return out

    def dense_rate(self, engine: str) -> Delta | None:
        """Dense's decode tokens/s across the two runs, B's divided by the probes' speed ratio when both
        runs have a probe: a regression when the whole interval lies below 1 / the tolerance."""
        try:
            ra, rb = (ev.rounds(run, DENSE, engine)["per_round"]["decode_tokens_per_s"] for run in (self.a, self.b))
        except (NotMeasured, KeyError):
            return None
        ratio = machine_ratio(self.a, self.b)
        normalised = [x / ratio for x in rb] if ratio else rb  # B's rate on A's machine
        interval = st.independent_ratio(normalised, ra, self.resamples, self.seed)
        tol = self.tol.throughput.normalised_ratio if ratio else self.tol.throughput.dense_ratio
        status = REGRESSION if interval.high < 1 / tol else BETTER if interval.low > tol else OK
        how = f"normalised by the probes (B's machine ×{ratio:.3g} A's)" if ratio else "raw: no probe"
        return Delta(DENSE, f"throughput_{engine}.decode_tokens_per_s", f"{np.median(ra):.4g}", f"{np.median(rb):.4g}",
                     f"×{interval.fmt('.3f')}", f"{how}; worse by ≤ ×{tol:g}", status)

    # -- claims -------------------------------------------------------------------------------------
    def claim_moves(self) -> list[Delta]:
        before = {(v.claim.id, v.subject): v.status for v in judge_run(self.a, self.claims, self.figures_a)}
        out = []
        for v in judge_run(self.b, self.claims, self.figures_b):
            old = before.get((v.claim.id, v.subject))
            if old is None or old == v.status:
                continue
            status = REGRESSION if (old, v.status) == (PASS, FAIL) else CHANGED
            if INCONCLUSIVE in (old, v.status):
                status = CHANGED
            out.append(Delta(v.subject, f"claim {v.claim.id}", old, v.status, f"{old} → {v.status}", "-", status))
        return out


def compare_runs(a: Run, b: Run, tolerances: Tolerances, claims: Claims,
                 figures: dict[str, Figures] | None = None) -> list[Delta]:
    return Comparison(a, b, tolerances, claims, figures).deltas()


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
        + (f" Models whose identity changed: {', '.join(changed)}." if changed else ""),
        "",
    ]
    if a.profile_name != b.profile_name:
        lines += ["Warning: the runs used different profiles; differences may come from the settings.", ""]
    lines += [normalisation_text(a, b), ""]
    order = {REGRESSION: 0, LOST: 1, CHANGED: 2, BETTER: 3, NOT_PAIRED: 4, NEW: 5, OK: 6}
    rows = [[d.model, d.metric, d.a, d.b, d.change, d.tolerance, f"**{d.status}**" if d.status in (REGRESSION, LOST)
             else d.status] for d in sorted(deltas, key=lambda d: order[d.status])]
    lines += ["Accuracy in %. Paired tests wherever the runs share items, windows or rounds (see `laco compare --help`).",
              "", table(rows, ["model", "metric", "A", "B", "change", "test / tolerance", "status"])]
    return "\n".join(lines) + "\n"
