"""Claims -> verdicts: the one judge that the suites, the reports, `laco gate` and `laco compare` use.

A verdict is decided by where the 95% interval of the claim's statistic lies against its threshold:
PASS when the whole interval is on the claim's side, FAIL when the whole interval is on the other
side, INCONCLUSIVE when it straddles the threshold (with the number of items per task that would
decide it at the observed effect). Apart from these three: *not measured* (a value is missing, n/a,
failed or stale) and *not at the claim's conditions* (the model's pruning ratio is outside the band
the paper states, or the other model is not at a matched ratio). Neither of those is ever a pass.

Each comparison of a subject with one other model (or one benchmark) is a `Row`; a `Verdict` gathers
the rows of one (claim, subject) pair: it passes only when every row passes.

Statistics per metric (suites.statistics): accuracy pairs the items both models answered
(stratified by task); perplexity pairs the windows; throughput pairs interleaved rounds; pruning time
resamples repeats; parameter memory is exact. A measured speed-up whose whole interval lies above
both the compute-bound ideal (FLOP ratio) and the layer ratio (the ceiling where per-layer overhead
dominates) is "implausible: noise" and decides nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from laco import LacoError
from suites import evidence as ev
from suites import statistics as st
from suites.claims import Claim, Claims
from suites.evidence import DENSE, NotMeasured, Run

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
NOT_MEASURED, NOT_AT_CONDITIONS = "not measured", "not at the claim's conditions"
STATUSES = (PASS, FAIL, INCONCLUSIVE, NOT_MEASURED, NOT_AT_CONDITIONS)
DECIDED = (PASS, FAIL)


def decide(interval: st.Interval, comparison: str, threshold: float) -> str:
    """PASS / FAIL / INCONCLUSIVE by where the whole interval lies against the threshold."""
    low, high = interval.low, interval.high
    if comparison == ">":
        return PASS if low > threshold else FAIL if high <= threshold else INCONCLUSIVE
    if comparison == ">=":
        return PASS if low >= threshold else FAIL if high < threshold else INCONCLUSIVE
    if comparison == "<":
        return PASS if high < threshold else FAIL if low >= threshold else INCONCLUSIVE
    if comparison == "<=":
        return PASS if high <= threshold else FAIL if low > threshold else INCONCLUSIVE
    raise LacoError(f"unknown comparison {comparison!r}")


@dataclass
class Row:
    """One comparison: the subject vs `other` (a model, or a benchmark of a per-benchmark claim)."""

    status: str
    other: str | None
    ours: str
    note: str = ""
    interval: st.Interval | None = None
    threshold: float | None = None
    paper: str = ""  # the paper's figure for this comparison
    items_needed: dict[str, int] | None = None
    engine: str = ""  # which throughput engine decided it
    flags: list[str] = field(default_factory=list)  # bound checks: "implausible: noise", "at chance"


@dataclass
class Verdict:
    claim: Claim
    subject: str
    rows: list[Row]
    gated: bool
    paper: str  # the paper's figure (statement or cited number) for this run's model
    ratio: float | None = None  # the subject's pruning ratio

    @property
    def status(self) -> str:
        """PASS when every comparison at the claim's conditions passes; a comparison outside them (a
        baseline not at a matched ratio, a benchmark where dense is at chance) is out of the claim's scope
        and shown, but only when nothing is left in scope is the verdict 'not at the claim's conditions'."""
        statuses = [r.status for r in self.rows if r.status != NOT_AT_CONDITIONS]
        if not self.rows:
            return NOT_MEASURED
        if not statuses:
            return NOT_AT_CONDITIONS
        for s in (FAIL, INCONCLUSIVE, NOT_MEASURED):
            if s in statuses:
                return s
        return PASS

    @property
    def ours(self) -> str:
        if len(self.rows) == 1:
            return self.rows[0].ours
        return "; ".join(f"{r.other}: {r.ours}" for r in self.rows)

    @property
    def notes(self) -> list[str]:
        return [n for r in self.rows for n in ([r.note] if r.note else []) + r.flags]


# --- the judge ----------------------------------------------------------------------------------------

class Judge:
    """Judges the claims of one run; statistics settings come from the claims file."""

    def __init__(self, run: Run, claims: Claims):
        self.run, self.claims = run, claims
        s = claims.statistics
        self.resamples, self.seed = s.resamples, s.seed
        self.paper_model, self.own_model = claims.paper.model_of(run.profile_name)

    # -- entry points --------------------------------------------------------------------------
    def subjects(self, claim: Claim) -> list[str]:
        return [k for k in self.run.keys_of(self.claims.methods(claim.subject)) if k != DENSE]

    def all(self) -> list[Verdict]:
        """Every claim that applies to the run's profile, for every subject model; a claim whose subject
        role has no model in the run gets one 'not measured' verdict."""
        verdicts = []
        for claim in self.claims.for_run(self.run):
            keys = self.subjects(claim)
            if not keys:
                missing = Row(NOT_MEASURED, None, "-", f"run has no {claim.subject} model")
                verdicts.append(Verdict(claim, "-", [missing], claim.gated_for(self.run.profile_name), claim.paper_figure))
            verdicts.extend(self.judge(claim, k) for k in keys)
        return verdicts

    def judge(self, claim: Claim, subject: str) -> Verdict:
        ratio = self.run.models[subject].pruning_ratio
        verdict = Verdict(claim, subject, [], claim.gated_for(self.run.profile_name), self.paper_text(claim, subject), ratio)
        outside = self.outside_conditions(claim, subject)
        if outside:
            verdict.rows = [Row(NOT_AT_CONDITIONS, None, _ratio_text(ratio), outside)]
            return verdict
        if claim.kind == "loadable":
            verdict.rows = [self.loadable(claim, subject)]
        elif claim.kind == "versus":
            verdict.rows = self.versus(claim, subject)
        elif claim.kind == "retention":
            verdict.rows = self.retention(claim, subject)
        else:
            verdict.rows = self.above_chance(claim, subject)
        verdict.paper = self.verdict_paper(verdict)
        return verdict

    # -- conditions -----------------------------------------------------------------------------
    def outside_conditions(self, claim: Claim, subject: str) -> str:
        """Why the subject is not at the claim's conditions ('' when it is, or the claim states none)."""
        cond = claim.conditions
        if cond.ratio is None:
            return ""
        ratio = self.run.models[subject].pruning_ratio
        if ratio is None:
            return f"{subject}: pruning ratio not recorded"
        low, high = cond.ratio
        if low - 1e-9 <= ratio <= high + 1e-9:
            return ""
        own = self.paper_ratio(subject) if cond.ratio_of_paper else None
        if own is not None and abs(ratio - own) <= cond.ratio_tolerance:
            return ""
        also = f" or at the paper's {own:.1%} ± {cond.ratio_tolerance:.1%} for this model" if own is not None else ""
        return f"{subject} removed {ratio:.1%}; the paper makes this claim at {low:.0%}–{high:.0%}{also}"

    def paper_ratio(self, subject: str) -> float | None:
        """The paper's Table 1 ratio of this run's model and the subject's method (own model only)."""
        if not self.own_model:
            return None
        rows = self.claims.paper.rows(1, self.paper_model, self.run.models[subject].method)
        return rows[0].ratio if rows else None

    def unmatched(self, claim: Claim, subject: str, other: str) -> str:
        """Why `other` is not at a matched ratio with the subject ('' when it is or no rule applies)."""
        cond = claim.conditions
        if cond.match is None or other == DENSE:
            return ""
        rs, ro = self.run.models[subject].pruning_ratio, self.run.models[other].pruning_ratio
        if rs is None or ro is None:
            return f"pruning ratio of {subject if rs is None else other} not recorded"
        if cond.match == "same":
            ok = abs(ro - rs) <= cond.match_tolerance
            rule = f"the same ratio (± {cond.match_tolerance:.1%})"
        else:
            ok = rs - cond.match_slack <= ro <= rs + cond.match_tolerance
            rule = f"an equal or slightly smaller ratio ({rs - cond.match_slack:.1%}–{rs + cond.match_tolerance:.1%})"
        return "" if ok else f"{other} removed {ro:.1%}, {subject} {rs:.1%}: not {rule}"

    # -- versus -----------------------------------------------------------------------------------
    def others(self, claim: Claim, subject: str) -> list[str]:
        if claim.against == DENSE:
            return [DENSE] if DENSE in self.run.models else []
        return [k for k in self.run.keys_of(self.claims.methods(claim.against)) if k not in (subject, DENSE)]

    def versus(self, claim: Claim, subject: str) -> list[Row]:
        others = self.others(claim, subject)
        if not others:
            names = ", ".join(self.claims.methods(claim.against))
            return [Row(NOT_MEASURED, None, "-", f"run has no {claim.against} model ({names})")]
        group = claim.metric.partition(".")[0]
        engine = self.throughput_engine(claim, [subject, *others]) if group == "throughput" else ""
        rows = []
        for other in others:
            mismatch = self.unmatched(claim, subject, other)
            if mismatch:
                rows.append(Row(NOT_AT_CONDITIONS, other, _ratio_text(self.run.models[other].pruning_ratio), mismatch))
                continue
            try:
                row = COMPARE[group](self, claim, subject, other, engine)
            except NotMeasured as exc:
                row = Row(NOT_MEASURED, other, "-", str(exc))
            row.paper = self.paper_text(claim, subject, other)
            rows.append(row)
        return rows

    def verdict_paper(self, verdict: Verdict) -> str:
        """The claim's figure in words, then the paper's own figures for each comparison where it has them."""
        cited = list(dict.fromkeys(r.paper for r in verdict.rows if r.paper))
        return f"{verdict.claim.paper_figure}; paper: {'; '.join(cited)}" if cited else verdict.paper

    def accuracy_row(self, claim: Claim, subject: str, other: str, _engine: str) -> Row:
        items = ev.paired_items(self.run, [subject, other])
        k = claim.threshold

        def diff(means):
            return st.task_average(means, subject) - k * st.task_average(means, other)

        interval = st.bootstrap_tasks(items, diff, self.resamples, self.seed)
        s_avg, o_avg = (float(np.mean([items[t][m].mean() for t in items])) for m in (subject, other))
        scale = "" if k == 1 else f"{k:g}×"
        ours = f"{_pct(s_avg)} vs {scale}{_pct(o_avg)}: {interval.fmt('+.1f', 100)} pt"
        return self.row(claim, other, interval, 0.0, ours, items, f"{len(items)} tasks, paired items")

    def perplexity_row(self, claim: Claim, subject: str, other: str, _engine: str) -> Row:
        a, b, tokens = ev.paired_windows(self.run, subject, other)
        interval = st.perplexity_ratio(a, b, tokens, self.resamples, self.seed)
        pa, pb = (math.exp(sum(x) / (tokens * len(x))) for x in (a, b))
        ours = f"{pa:.2f} vs {pb:.2f}: ×{interval.fmt('.3g')}"
        return self.row(claim, other, interval, claim.threshold, ours, None, f"{len(a)} windows, paired")

    def memory_row(self, claim: Claim, subject: str, other: str, _engine: str) -> Row:
        name = claim.metric.partition(".")[2]
        values = {}
        for key in (subject, other):
            v = self.run.need(key, "memory").values.get(name)
            if not isinstance(v, (int, float)) or v <= 0:
                raise NotMeasured(f"{key}: memory has no {name}")
            values[key] = float(v)
        kind = "exact" if name == "param_mb" else "one measurement"
        interval = st.exact(values[subject] / values[other], kind)
        ours = f"{values[subject]:.1f} MB vs {values[other]:.1f} MB (×{interval.estimate:.3f})"
        return self.row(claim, other, interval, claim.threshold, ours, None, "" if name == "param_mb" else kind)

    def pruning_time_row(self, claim: Claim, subject: str, other: str, _engine: str) -> Row:
        a, b, paired = ev.paired_pruning_seconds(self.run, subject, other)
        if paired:
            interval, note = st.round_ratio(a, b, self.resamples, self.seed), f"{len(a)} interleaved rounds"
        else:
            interval, note = st.independent_ratio(a, b, self.resamples, self.seed), f"{len(a)} and {len(b)} timings"
        ours = f"{np.median(a):.2f} s vs {np.median(b):.2f} s: ×{interval.fmt('.3g')}"
        return self.row(claim, other, interval, claim.threshold, ours, None, note)

    def throughput_row(self, claim: Claim, subject: str, other: str, engine: str) -> Row:
        if not engine:
            raise NotMeasured(f"{subject} and {other} have no interleaved throughput on a common engine")
        rate = claim.metric.partition(".")[2]
        a, b = ev.paired_rounds(self.run, subject, other, engine, rate)
        interval = st.round_ratio(a, b, self.resamples, self.seed)
        ours = f"{np.median(a):.1f} vs {np.median(b):.1f} tok/s: ×{interval.fmt('.3g')}"
        row = self.row(claim, other, interval, claim.threshold, ours, None, f"{engine}, {len(a)} rounds")
        row.engine = engine
        ideal, bound = ev.speedup_bounds(self.run, subject, other, rate)
        bound_text = f"compute-bound ideal ×{ideal:.3f}" + (f", layer ratio ×{bound:.3f}" if bound and bound > ideal else "") \
            if ideal is not None else ""
        if bound is not None and interval.low > bound:
            row.flags.append(f"implausible: noise (measured ×{interval.fmt('.3g')} above the {bound_text})")
            row.status, row.items_needed = INCONCLUSIVE, None
        elif ideal is not None:
            row.flags.append(bound_text)
        return row

    def throughput_engine(self, claim: Claim, keys: list[str]) -> str:
        """The one engine every model of the comparison was timed on: vLLM where all loaded there, else HF."""
        for engine in ("vllm", "hf"):
            try:
                phases = {ev.rounds(self.run, k, engine).get("phase") for k in keys if k in self.run.models}
            except NotMeasured:
                continue
            if len(phases) == 1:
                return engine
        return ""

    def row(self, claim: Claim, other: str, interval: st.Interval, threshold: float, ours: str,
            items: dict | None, note: str) -> Row:
        status = decide(interval, claim.comparison, threshold)
        needed = None
        if status == INCONCLUSIVE and items is not None:
            needed = st.items_to_decide(interval, threshold, {t: len(v["chance"]) for t, v in items.items()})
        return Row(status, other, ours, note, interval, threshold, items_needed=needed)

    # -- retention ----------------------------------------------------------------------------------
    def retention(self, claim: Claim, subject: str) -> list[Row]:
        try:
            items = ev.paired_items(self.run, [subject, DENSE])
        except NotMeasured as exc:
            return [Row(NOT_MEASURED, DENSE, "-", str(exc))]
        if claim.metric == "accuracy.each":
            return [self.retention_of_task(claim, subject, task, {task: items[task]}) for task in items]
        if claim.metric == "accuracy.average":
            statistic, what = (lambda m: np.mean([st.safe_ratio(m[t][subject], m[t][DENSE]) for t in sorted(m)], axis=0),
                               "mean over benchmarks of pruned / dense (the paper's Per., Table 2)")
        else:
            def statistic(m):
                above = st.task_average(m, subject) - st.task_average(m, "chance")
                return st.safe_ratio(above, st.task_average(m, DENSE) - st.task_average(m, "chance"))
            what = "(avg − chance) / (dense avg − chance)"
        interval = st.bootstrap_tasks(items, statistic, self.resamples, self.seed)
        row = self.row(claim, "average", interval, claim.threshold, _pct_interval(interval), items,
                       f"{len(items)} tasks, paired items; {what}")
        row.flags += self.chance_flags(items, subject)
        return [row]

    def retention_of_task(self, claim: Claim, subject: str, task: str, items: dict) -> Row:
        interval = st.bootstrap_tasks(items, lambda m: st.safe_ratio(m[task][subject], m[task][DENSE]), self.resamples,
                                      self.seed)
        s, d = items[task][subject].mean(), items[task][DENSE].mean()
        row = self.row(claim, task, interval, claim.threshold, _pct_interval(interval),
                       items, f"{_pct(s)} vs dense {_pct(d)} (n={len(items[task]['chance'])})")
        row.flags += self.chance_flags(items, subject)
        return row

    def chance_flags(self, items: dict, subject: str) -> list[str]:
        """'at chance' where the subject's average is not above the chance average (interval)."""
        interval = st.bootstrap_tasks(items, lambda m: st.task_average(m, subject) - st.task_average(m, "chance"),
                                      self.resamples, self.seed)
        return [] if interval.low > 0 else [f"at chance: {subject} − chance = {interval.fmt('+.1f', 100)} pt"]

    # -- above chance ----------------------------------------------------------------------------------
    def above_chance(self, claim: Claim, subject: str) -> list[Row]:
        try:
            items = ev.paired_items(self.run, [subject, DENSE])
        except NotMeasured as exc:
            return [Row(NOT_MEASURED, DENSE, "-", str(exc))]
        rows = []
        for task, series in items.items():
            one = {task: series}
            dense = st.bootstrap_tasks(one, lambda m: m[task][DENSE] - m[task]["chance"], self.resamples, self.seed)
            if dense.low <= 0:
                rows.append(Row(NOT_AT_CONDITIONS, task, "-", f"dense itself is not above chance on {task} "
                                f"({dense.fmt('+.1f', 100)} pt): nothing to keep"))
                continue
            interval = st.bootstrap_tasks(one, lambda m: m[task][subject] - m[task]["chance"], self.resamples, self.seed)
            ours = f"{_pct(series[subject].mean())} vs chance {_pct(series['chance'].mean())}: {interval.fmt('+.1f', 100)} pt"
            rows.append(self.row(claim, task, interval, 0.0, ours, one, f"n={len(series['chance'])}"))
        return rows

    # -- loadable ------------------------------------------------------------------------------------
    def loadable(self, claim: Claim, subject: str) -> Row:
        record = self.run.models[subject].record
        loadable = record.get("loadable") or {}
        declared, reason = loadable.get(claim.engine), loadable.get("reason", "")
        if claim.engine == "vllm":
            for name in ("throughput_vllm",):
                if self.run.ok(subject, name) is not None:
                    return Row(PASS, "vllm", "served by vLLM", f"{name} measured", st.exact(1.0))
            if declared is False:
                return Row(FAIL, "vllm", "not loadable", reason, st.exact(0.0))
            return Row(NOT_MEASURED, "vllm", "-", self.run.missing_reason(subject, "throughput_vllm"))
        if not record:
            return Row(NOT_MEASURED, "transformers", "-", f"{subject}: no pruning record")
        loader = record.get("loader", "transformers")
        if declared is False or loader != "transformers":
            return Row(FAIL, "transformers", f"needs {loader}", reason, st.exact(0.0))
        problem, where = saved_config_problem(self.run.models[subject].saved, record, self.run.path)
        if problem:
            return Row(FAIL, "transformers", "config does not match", problem, st.exact(0.0))
        if declared is None and not where:
            return Row(NOT_MEASURED, "transformers", "-", f"{subject}: record declares no loadability, no saved config")
        return Row(PASS, "transformers", "stock AutoModelForCausalLM", f"loader=transformers; {where or 'declared'}",
                   st.exact(1.0))

    # -- the paper beside us ------------------------------------------------------------------------
    def paper_text(self, claim: Claim, subject: str, other: str | None = None) -> str:
        """The paper's figure for this claim on this run's model (or the reference model, labelled)."""
        ref = claim.paper
        if ref is None:
            return claim.paper_figure if other is None else ""
        paper = self.claims.paper
        method = self.run.models[subject].method if subject in self.run.models else claim.subject
        model = self.paper_model + ("" if self.own_model else " (another model)")
        table = paper.table(ref.table)
        unit = {"%": "%", "MB": " MB", "tokens/s": " tok/s", "s": " s"}.get(table.unit if table else "", "")
        if claim.metric == "accuracy.each":
            row = next(iter(paper.rows(ref.table, self.paper_model, method)), None)
            if row is None or other is not None:
                return claim.paper_figure if other is None else ""
            worst = min(row.values, key=row.values.get)
            return f"{claim.paper_figure}; paper: lowest {row.values[worst]:g}% ({worst}), Table {ref.table}, {model}"

        def cite(m: str) -> str:
            parts = []
            for column in ref.columns:
                f = paper.figure(ref.table, column, self.paper_model, m)
                if f:
                    name = "" if len(ref.columns) == 1 else f"{column} "
                    parts.append(f"{name}{f.value:g}{unit}{'†' if f.filled else ''}")
            return f"{paper.data.methods.get(m, m)} {' / '.join(parts)}" if parts else ""

        where = f"Table {ref.table}{' ' + ref.columns[0] if len(ref.columns) == 1 else ''}, {model}"
        ours = cite(method)
        if other is None:
            return f"{claim.paper_figure}; paper: {ours} ({where})" if ours else claim.paper_figure
        theirs = cite(self.run.models[other].method if other in self.run.models else other)
        return f"{ours} vs {theirs} ({where})" if ours and theirs else ""


COMPARE: dict[str, Callable] = {
    "accuracy": Judge.accuracy_row,
    "perplexity": Judge.perplexity_row,
    "memory": Judge.memory_row,
    "throughput": Judge.throughput_row,
    "pruning_time": Judge.pruning_time_row,
}


def judge_run(run: Run, claims: Claims) -> list[Verdict]:
    return Judge(run, claims).all()


def saved_config_problem(saved: str | None, record: dict, run_dir: Path) -> tuple[str, str]:
    """Check the saved config.json where the weights were kept: a stock loader rebuilds the model
    from it, so a layer count that disagrees with the pruning record would silently re-create
    deleted layers with random weights. Returns (problem or "", what was checked)."""
    candidates = [Path(saved) / "config.json", run_dir / saved / "config.json"] if saved else []
    config = next((c for c in candidates if c.is_file()), None)  # as recorded, or relative to the run
    if config is None:
        return "", ""
    try:
        layers = json.loads(config.read_text(encoding="utf-8")).get("num_hidden_layers")
    except json.JSONDecodeError:
        return f"{config}: not valid JSON", ""
    expected = record.get("n_layers_after")
    if expected is not None and layers != expected:
        return f"{config}: num_hidden_layers={layers} but the model has {expected} layers", ""
    return "", f"{config.name}: num_hidden_layers={layers}"


# --- formatting ---------------------------------------------------------------------------------------

def _pct(x: float) -> str:
    return f"{100 * x:.1f}"


def _pct_interval(interval: st.Interval) -> str:
    return interval.fmt(".1f", 100) + " %"


def _ratio_text(ratio: float | None) -> str:
    return f"pruned {ratio:.1%}" if ratio is not None else "-"
