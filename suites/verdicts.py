"""Claims -> verdicts: the one judge that the suites, the reports, `laco gate` and `laco compare` use.

What a verdict is (PASS / FAIL / INCONCLUSIVE by where the claim's 95% interval lies against its
threshold, EQUAL inside a comparative claim's margin, *not measured*, *not at the claim's conditions*;
Holm over the rows of a claim) is defined in `suites.outcomes`. Each kind of claim is judged by one
function of `KINDS`, and each metric of a `versus` claim by one of `ROWS`. The intervals come from the
run's figures (`suites.figures`; which interval for which evidence: `suites.statistics`): accuracy pairs
the items both models answered (a bootstrap stratified by task; p-values from its resamples);
perplexity pairs the windows and throughput the interleaved rounds (t on log ratios); pruning time pairs
its interleaved rounds, or compares independent repeats (Welch t on logs); parameter memory is exact.
A measured speed-up whose whole interval lies above both the compute-bound ideal (FLOP ratio) and the
layer ratio is "implausible: noise" and decides nothing.

Chance: a benchmark where dense is not above chance is left out of every retention claim (listed in
`Verdict.left_out`), and the 30% floor cannot pass on a benchmark where the pruned model itself is not
above chance (keeping 30% of dense by guessing keeps nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import numpy as np

from suites import evidence as ev
from suites import stages
from suites import statistics as st
from suites.claims import Claim, Claims
from suites.evidence import DENSE, NotMeasured, Run
from suites.figures import Figures
from suites.markdown import pct, pct_interval, pruned_text
from suites.paper import AboveChance
from suites.outcomes import (DECIDED, EQUAL, FAIL, INCONCLUSIVE, NOT_AT_CONDITIONS, NOT_MEASURED,  # noqa: F401 (the
                             PASS, STATUSES, Row, Verdict, apply_holm, decide)  # statuses are read from here too)

RETENTION = {  # the statistic of a retention claim on the average, and its definition in words
    "accuracy.average": ("per", "mean over benchmarks of pruned / dense (the paper's Per., Table 2)"),
    "accuracy.average_ratio": ("of_average", "avg / dense avg"),
    "accuracy.average_above_chance": ("above_chance", "(avg − chance) / (dense avg − chance)"),
}
CHANCE_KINDS = ("retention", "above-chance")  # the kinds that leave out benchmarks where dense is at chance
# what a model with seeded random weights (synthetic:NAME) cannot speak to: its verdicts read "not at the
# claim's conditions"; speed, memory and loading are judged as for any model
QUALITY_METRICS = ("accuracy.", "perplexity.")


class Judge:
    """Judges the claims of one run on its figures; statistics settings come from the claims file."""

    def __init__(self, run: Run, claims: Claims, figures: Figures | None = None):
        self.run, self.claims = run, claims
        self.figures = figures or Figures(run, claims.statistics.resamples, claims.statistics.seed)
        self.paper_model, self.own_model = claims.paper.model_of(run.profile_name)

    # -- entry points --------------------------------------------------------------------------
    def subjects(self, claim: Claim) -> list[str]:
        return [k for k in self.run.keys_of(self.claims.methods(claim.subject))
                if k != DENSE and claim.takes(self.run.models[k])]

    def all(self) -> list[Verdict]:
        """Every claim that applies to the run's profile, for every subject model; a claim whose subject
        role has no model in the run gets one 'not measured' verdict."""
        verdicts = []
        for claim in self.claims.for_run(self.run):
            keys = self.subjects(claim)
            if not keys:
                stage = "" if claim.stage == "pruned" else f"{claim.recipe or ''} {claim.stage} ".lstrip()
                missing = Row(NOT_MEASURED, None, "-", f"run has no {stage}{claim.subject} model")
                verdicts.append(Verdict(claim, "-", [missing], claim.gated_for(self.run.profile_name), claim.paper_figure))
            verdicts.extend(self.judge(claim, k) for k in keys)
        return verdicts

    def judge(self, claim: Claim, subject: str) -> Verdict:
        ratio = self.run.models[subject].pruning_ratio
        verdict = Verdict(claim, subject, [], claim.gated_for(self.run.profile_name), self.paper_text(claim, subject), ratio)
        outside = self.outside_conditions(claim, subject)
        if outside:
            verdict.rows = [Row(NOT_AT_CONDITIONS, None, pruned_text(ratio), outside)]
            return verdict
        verdict.rows = KINDS[claim.kind](self, claim, subject)
        verdict.family_level = apply_holm(verdict.rows)
        for row in verdict.rows:
            self.add_items_needed(claim, row)
        if claim.kind in CHANCE_KINDS:
            verdict.left_out = self.left_out(subject)
        verdict.paper = self.verdict_paper(verdict)
        return verdict

    def left_out(self, subject: str) -> list[str]:
        try:
            return list(self.figures.left_out(subject).values())
        except NotMeasured:
            return []

    def add_items_needed(self, claim: Claim, row: Row) -> None:
        """For an undecided accuracy row: the items per task that would decide it (statistics.items_to_decide),
        capped at what each data set has."""
        if row.status != INCONCLUSIVE or row.items is None or row.interval is None or row.threshold is None:
            return
        try:
            available = ev.available_items(self.run)
        except NotMeasured:
            available = {}
        row.items_needed = st.items_to_decide(row.interval, claim.comparison, row.threshold, row.items, available,
                                              row.adjusted_level or st.SIDE_LEVEL)

    # -- conditions -----------------------------------------------------------------------------
    def outside_conditions(self, claim: Claim, subject: str) -> str:
        """Why the subject is not at the claim's conditions ('' when it is, or the claim states none)."""
        if self.run.synthetic and claim.metric.startswith(QUALITY_METRICS):
            return f"{self.run.synthetic.get('note', 'synthetic weights')}: seeded random weights have no quality to judge"
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
        if claim.against in stages.RELATIONS:
            return stages.RELATIONS[claim.against](self.run, subject)
        return [k for k in self.run.keys_of(self.claims.methods(claim.against))
                if k not in (subject, DENSE) and claim.takes(self.run.models[k], subject=False)]

    def versus(self, claim: Claim, subject: str) -> list[Row]:
        others = self.others(claim, subject)
        if not others:
            if claim.against in stages.RELATIONS:
                return [Row(NOT_MEASURED, None, "-", f"run has no {claim.against} model of {subject}")]
            names = ", ".join(self.claims.methods(claim.against))
            stage = "" if claim.stage == "pruned" else f"{claim.stage} "
            return [Row(NOT_MEASURED, None, "-", f"run has no {stage}{claim.against} model ({names})")]
        group = claim.metric.partition(".")[0]
        row_of = partial(ROWS[group], self)
        if group == "throughput":
            row_of = partial(row_of, engine=self.throughput_engine([subject, *others]))
        rows = []
        for other in others:
            mismatch = self.unmatched(claim, subject, other)
            if mismatch:
                rows.append(Row(NOT_AT_CONDITIONS, other, pruned_text(self.run.models[other].pruning_ratio), mismatch))
                continue
            try:
                row = row_of(claim, subject, other)
            except NotMeasured as exc:
                row = Row(NOT_MEASURED, other, "-", str(exc))
            row.paper = self.paper_text(claim, subject, other)
            row.flags += self.training_cost(subject, other)
            rows.append(row)
        return rows

    def training_cost(self, subject: str, other: str) -> list[str]:
        """Beside a comparison of two post-trained models (Table 21): what each one's training cost."""
        posts = {k: self.run.models[k].post_training for k in (subject, other) if k != DENSE}
        if len(posts) < 2 or not all(posts.values()):
            return []
        return ["training cost: " + "; ".join(f"{k} {p.get('recipe')} {p.get('tokens_seen', 0):,} tokens, "
                                              f"{p.get('seconds', float('nan')):.0f} s wall" for k, p in posts.items())]

    def accuracy_row(self, claim: Claim, subject: str, other: str) -> Row:
        items = self.figures.paired(subject, other)
        k = claim.threshold
        interval = self.figures.difference(subject, other, k)
        s_avg, o_avg = (float(np.mean([items[t][m].mean() for t in items])) for m in (subject, other))
        scale = "" if k == 1 else f"{k:g}×"
        ours = f"{pct(s_avg)} vs {scale}{pct(o_avg)}: {interval.fmt('+.1f', 100)} pt"
        return self.row(claim, other, interval, 0.0, ours, items, f"{len(items)} tasks, paired items")

    def perplexity_row(self, claim: Claim, subject: str, other: str) -> Row:
        a, b, tokens = ev.paired_windows(self.run, subject, other)
        interval = self.figures.ppl_ratio(subject, other)
        pa, pb = (math.exp(sum(x) / (tokens * len(x))) for x in (a, b))
        ours = f"{pa:.2f} vs {pb:.2f}: ×{interval.fmt('.3g')}"
        return self.row(claim, other, interval, claim.threshold, ours, None, f"{len(a)} windows, paired")

    def loss_row(self, claim: Claim, subject: str, other: str) -> Row:
        a, b, steps = stages.paired_loss_tail(self.run, subject, other)
        interval = self.figures.loss_ratio(subject, other)
        ours = f"loss {np.mean(a):.3f} vs {np.mean(b):.3f}: ×{interval.fmt('.3g')}"
        return self.row(claim, other, interval, claim.threshold, ours, None,
                        f"last {len(steps)} logged steps (from step {steps[0]}), paired by step")

    def memory_row(self, claim: Claim, subject: str, other: str) -> Row:
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
        row = self.row(claim, other, interval, claim.threshold, ours, None, "" if name == "param_mb" else kind)
        if name != "param_mb":
            row.flags.append(f"decided on a single {name} measurement of each model: no repeat, no interval")
        return row

    def pruning_time_row(self, claim: Claim, subject: str, other: str) -> Row:
        a, b, paired = ev.paired_pruning_seconds(self.run, subject, other)
        interval = self.figures.pruning_time_ratio(subject, other)
        note = f"{len(a)} interleaved rounds" if paired else f"{len(a)} and {len(b)} timings"
        ours = f"{np.median(a):.2f} s vs {np.median(b):.2f} s: ×{interval.fmt('.3g')}"
        return self.row(claim, other, interval, claim.threshold, ours, None, note)

    def throughput_row(self, claim: Claim, subject: str, other: str, engine: str) -> Row:
        if not engine:
            raise NotMeasured(f"{subject} and {other} have no interleaved throughput on a common engine")
        rate = claim.metric.partition(".")[2]
        a, b = ev.paired_rounds(self.run, subject, other, engine, rate)
        speedup = self.figures.speedup(subject, other, engine, rate)
        interval, ideal, bound = speedup.interval, speedup.ideal, speedup.bound
        ours = f"{np.median(a):.1f} vs {np.median(b):.1f} tok/s: ×{interval.fmt('.3g')}"
        row = self.row(claim, other, interval, claim.threshold, ours, None, f"{engine}, {len(a)} rounds")
        row.engine = engine
        bound_text = f"compute-bound ideal ×{ideal:.3f}" + (f", layer ratio ×{bound:.3f}" if bound and bound > ideal else "") \
            if ideal is not None else ""
        if speedup.implausible:  # decides nothing, and takes no part in the claim's multiplicity
            row.flags.append(f"implausible: noise (measured ×{interval.fmt('.3g')} above the {bound_text})")
            row.status, row.p_value = INCONCLUSIVE, None
        elif ideal is not None:
            row.flags.append(bound_text)
        return row

    def throughput_engine(self, keys: list[str]) -> str:
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
        status = decide(interval, claim.comparison, threshold, claim.equal_band())
        sizes = {t: len(v["chance"]) for t, v in items.items()} if items is not None else None
        return Row(status, other, ours, note, interval, threshold, p_value=interval.p_against(claim.comparison, threshold),
                   coverage=interval.coverage, items=sizes)

    # -- retention ----------------------------------------------------------------------------------
    def retained(self, subject: str) -> dict | Row:
        """The items subject and dense share where dense is above chance (figures.retained), or the row
        saying why there are none: not measured, or dense at chance everywhere (outside the claim's scope)."""
        try:
            self.figures.paired(subject, DENSE)
        except NotMeasured as exc:
            return Row(NOT_MEASURED, DENSE, "-", str(exc))
        try:
            return self.figures.retained(subject)
        except NotMeasured as exc:
            return Row(NOT_AT_CONDITIONS, DENSE, "-", str(exc))

    def retention(self, claim: Claim, subject: str) -> list[Row]:
        items = self.retained(subject)
        if isinstance(items, Row):
            return [items]
        if claim.metric == "accuracy.each":
            return [self.retention_of_task(claim, subject, task, items) for task in items]
        which, what = RETENTION[claim.metric]
        interval = getattr(self.figures.retention(subject), which)
        threshold = self.threshold_of(claim, subject)
        if threshold is None:
            return [Row(NOT_MEASURED, "average", pct_interval(interval), "the paper has no figure of this statistic")]
        row = self.row(claim, "average", interval, threshold, pct_interval(interval), items,
                       f"{len(items)} tasks, paired items; {what}")
        row.flags += self.chance_flags(subject)
        return [row]

    def threshold_of(self, claim: Claim, subject: str) -> float | None:
        """The claim's threshold: its own, or the paper's figure of the statistic (threshold_of_paper)."""
        if not claim.threshold_of_paper:
            return claim.threshold
        figure = self.paper_above_chance(subject)
        return figure[0].value if figure else None

    def paper_above_chance(self, subject: str) -> tuple[AboveChance, bool] | None:
        """(the paper's above-chance retention of the subject's method, whether it is the run's own model):
        this run's model where the paper has its Table 1 rows, else the reference model, labelled."""
        method = self.method_of(subject, "laco")
        own = self.claims.paper.above_chance(self.paper_model, method) if self.own_model else None
        if own is not None:
            return own, True
        other = self.claims.paper.above_chance(self.claims.paper.data.reference_model, method)
        return (other, False) if other is not None else None

    def retention_of_task(self, claim: Claim, subject: str, task: str, items: dict) -> Row:
        interval = self.figures.task_retention(subject, task)
        s, d = items[task][subject].mean(), items[task][DENSE].mean()
        row = self.row(claim, task, interval, claim.threshold, pct_interval(interval),
                       {task: items[task]}, f"{pct(s)} vs dense {pct(d)} (n={len(items[task]['chance'])})")
        margin = self.figures.margin(subject, task)
        if margin.low <= 0:  # keeping a share of dense by guessing keeps nothing: this row cannot pass
            row.flags.append(f"not above chance: {subject} − chance = {margin.fmt('+.1f', 100)} pt, so keeping "
                             f"{claim.threshold:.0%} of dense is no evidence")
            row.ours += ", not above chance"  # the reason beside the figure: its interval alone reads as a pass
            if row.status == PASS:
                row.status, row.items = INCONCLUSIVE, None
        return row

    def chance_flags(self, subject: str, task: str | None = None) -> list[str]:
        """'at chance' where the subject's average (or score on `task`) is not above chance (interval)."""
        interval = self.figures.margin(subject, task)
        return [] if interval.low > 0 else [f"at chance: {subject} − chance = {interval.fmt('+.1f', 100)} pt"]

    # -- above chance ----------------------------------------------------------------------------------
    def above_chance(self, claim: Claim, subject: str) -> list[Row]:
        items = self.retained(subject)
        if isinstance(items, Row):
            return [items]
        rows = []
        for task, series in items.items():
            interval = self.figures.margin(subject, task)
            ours = f"{pct(series[subject].mean())} vs chance {pct(series['chance'].mean())}: {interval.fmt('+.1f', 100)} pt"
            rows.append(self.row(claim, task, interval, 0.0, ours, {task: series}, f"n={len(series['chance'])}"))
        return rows

    # -- loadable ------------------------------------------------------------------------------------
    def loadable(self, claim: Claim, subject: str) -> list[Row]:
        record = self.run.models[subject].record
        loadable = record.get("loadable") or {}
        declared, reason = loadable.get(claim.engine), loadable.get("reason", "")
        if claim.engine == "vllm":
            if self.run.ok(subject, "throughput_vllm") is not None:
                return [Row(PASS, "vllm", "served by vLLM", "throughput_vllm measured", st.exact(1.0))]
            if declared is False:
                return [Row(FAIL, "vllm", "not loadable", reason, st.exact(0.0))]
            return [Row(NOT_MEASURED, "vllm", "-", self.run.missing_reason(subject, "throughput_vllm"))]
        if not record:
            return [Row(NOT_MEASURED, "transformers", "-", f"{subject}: no pruning record")]
        loader = record.get("loader", "transformers")
        if declared is False or loader != "transformers":
            return [Row(FAIL, "transformers", f"needs {loader}", reason, st.exact(0.0))]
        problem, where = self.saved_config_problem(subject)
        if problem:
            return [Row(FAIL, "transformers", "config does not match", problem, st.exact(0.0))]
        if declared is None and not where:
            return [Row(NOT_MEASURED, "transformers", "-", f"{subject}: record declares no loadability, no saved config")]
        return [Row(PASS, "transformers", "stock AutoModelForCausalLM", f"loader=transformers; {where or 'declared'}",
                    st.exact(1.0))]

    def saved_config_problem(self, subject: str) -> tuple[str, str]:
        """The config.json saved with the weights against the pruning record: a stock loader rebuilds the
        model from it, so a layer count that disagrees would silently re-create deleted layers with random
        weights. Returns (problem or "", what was checked)."""
        saved = ev.saved_config(self.run, subject)
        if saved is None:
            return "", ""
        config, content = saved
        if content is None:
            return f"{config}: not valid JSON", ""
        layers, expected = content.get("num_hidden_layers"), self.run.models[subject].record.get("n_layers_after")
        if expected is not None and layers != expected:
            return f"{config}: num_hidden_layers={layers} but the model has {expected} layers", ""
        return "", f"{config.name}: num_hidden_layers={layers}"

    # -- the paper beside us ------------------------------------------------------------------------
    def paper_text(self, claim: Claim, subject: str, other: str | None = None) -> str:
        """The paper's figure for this claim on this run's model (or the reference model, labelled):
        for the subject alone, or for the subject against `other` ('' when the paper has not both)."""
        ref, paper = claim.paper, self.claims.paper
        alone = claim.paper_figure if other is None else ""
        if claim.threshold_of_paper and other is None:
            figure = self.paper_above_chance(subject)
            return f"{claim.paper_figure}; paper: {figure[0].cite(figure[1])}" if figure else alone
        if ref is None:
            return alone
        method = self.method_of(subject, claim.subject)
        if claim.metric == "accuracy.each":
            lowest = paper.cite_lowest(ref.table, self.paper_model, method, self.own_model) if other is None else ""
            return f"{claim.paper_figure}; paper: {lowest}" if lowest else alone
        ours = paper.cite_method(ref.table, ref.columns, self.paper_model, method)
        where = paper.source(ref.table, ref.columns, self.paper_model, self.own_model)
        if other is None:
            return f"{claim.paper_figure}; paper: {ours} ({where})" if ours else alone
        theirs = paper.cite_method(ref.table, ref.columns, self.paper_model, self.method_of(other, other))
        return f"{ours} vs {theirs} ({where})" if ours and theirs else ""

    def method_of(self, key: str, default: str) -> str:
        return self.run.models[key].method if key in self.run.models else default

    def verdict_paper(self, verdict: Verdict) -> str:
        """The claim's figure in words, then the paper's own figures for each comparison where it has them."""
        cited = list(dict.fromkeys(r.paper for r in verdict.rows if r.paper))
        return f"{verdict.claim.paper_figure}; paper: {'; '.join(cited)}" if cited else verdict.paper


KINDS: dict[str, Callable[[Judge, Claim, str], list[Row]]] = {  # a claim's kind -> its rows
    "retention": Judge.retention,
    "above-chance": Judge.above_chance,
    "versus": Judge.versus,
    "loadable": Judge.loadable,
}

ROWS: dict[str, Callable[..., Row]] = {  # the metric group of a versus claim -> its row against one model
    "accuracy": Judge.accuracy_row,
    "perplexity": Judge.perplexity_row,
    "memory": Judge.memory_row,
    "throughput": Judge.throughput_row,
    "pruning_time": Judge.pruning_time_row,
    "post_training": Judge.loss_row,
}


def judge_run(run: Run, claims: Claims, figures: Figures | None = None) -> list[Verdict]:
    return Judge(run, claims, figures).all()
