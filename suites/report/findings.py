"""The findings of a report's first screen, written from the run's figures and verdicts by rule.

At most three lines, in this order:
1. the largest effects: the main LaCo model's score kept and perplexity against dense, and against
   the other methods at its ratio point;
2. the claims that FAIL at their conditions (gated ones first);
3. the surprises against the paper: undecided comparisons whose estimate lies on the other side of
   the paper's claim.
Every number is read from the figures (suites.figures) or the verdicts; none is written here.
"""

from __future__ import annotations

from suites.evidence import DENSE, NotMeasured, Run
from suites.figures import Figures
from suites.markdown import times
from suites.outcomes import DECIDED, FAIL, NOT_AT_CONDITIONS, Verdict
from suites.report.sweeps import is_ablation, is_variant

SHOWN = 3  # FAIL verdicts or surprises named in one line; the rest are counted


def main_subject(run: Run, verdicts: list[Verdict]) -> str | None:
    """The model the report is about: the subject with most verdicts at their conditions (not an ablation
    variant), the first in the run's order on a tie."""
    counts: dict[str, int] = {}
    for v in verdicts:
        if v.subject in run.models and not is_variant(run, v.subject):
            counts[v.subject] = counts.get(v.subject, 0) + (v.status != NOT_AT_CONDITIONS)
    return max(counts, key=lambda k: (counts[k], -list(run.models).index(k)), default=None)


def findings_section(run: Run, figures: Figures, verdicts: list[Verdict], flags: list[str]) -> str:
    subject = main_subject(run, verdicts)
    judged = [v for v in verdicts if v.status != NOT_AT_CONDITIONS and not is_variant(run, v.subject)]
    lines = [line for line in (_effects(run, figures, subject), _failures(judged), _surprises(judged)) if line]
    lines += [f"⚠ {why}" for why in flags]
    if not lines:
        return ""
    return "\n".join(["## Findings", "", *[f"- {line}" for line in lines]])


def _effects(run: Run, figures: Figures, subject: str | None) -> str:
    """The main model against dense, then against every other method at its ratio point; nothing for
    synthetic weights, whose scores and perplexity are those of random weights."""
    if subject is None or run.synthetic:
        return ""
    ratio = run.models[subject].pruning_ratio
    parts, per = [], None
    try:
        kept = figures.retention(subject)
        per = kept.per.estimate
        parts.append(f"keeps {per:.1%} of dense's score per benchmark (Per.), {kept.above_chance.estimate:.1%} of its "
                     "margin above chance")
    except NotMeasured:
        pass
    ppl = _or_none(lambda: figures.ppl_ratio(subject, DENSE).estimate)
    if ppl is not None:
        parts.append(f"{'its perplexity is' if parts else 'has a perplexity'} {times(ppl)} dense's")
    if not parts:
        return ""
    text = f"**{subject}** ({ratio:.1%} removed) " + "; ".join(parts) + "."
    return text + _against_siblings(run, figures, subject, per, ppl is not None)


def _against_siblings(run: Run, figures: Figures, subject: str, per: float | None, with_ppl: bool) -> str:
    point = run.models[subject].point
    others = [k for k, m in run.models.items() if k not in (DENSE, subject) and m.point == point
              and m.method != run.models[subject].method and not is_ablation(run, k)]
    ppl = [f"{times(r)} {k}'s" for k in others if with_ppl
           for r in [_or_none(lambda k=k: figures.ppl_ratio(subject, k).estimate)] if r is not None]
    kept = [f"{k} {r:.1%}" for k in others if per is not None
            for r in [_or_none(lambda k=k: figures.retention(k).per.estimate)] if r is not None]
    sentences = ([f"its perplexity is {', '.join(ppl)}"] if ppl else []) + (
        [f"the others keep (Per.) {', '.join(kept)}"] if kept else [])
    return f" At its ratio point {'; '.join(sentences)}." if sentences else ""


def _failures(judged: list[Verdict]) -> str:
    failed = sorted((v for v in judged if v.status == FAIL), key=lambda v: not v.gated)
    if not failed:
        return ""
    named = [f"`{v.claim.id}` for {v.subject}{' (gated)' if v.gated else ''}: {_short(v)} against {v.claim.paper_figure}"
             for v in failed[:SHOWN]]
    more = f"; {len(failed) - SHOWN} more in the table" if len(failed) > SHOWN else ""
    return "**FAIL**: " + "; ".join(named) + more + "."


def _surprises(judged: list[Verdict]) -> str:
    """Undecided rows whose estimate lies on the other side of the claim's threshold: the run points
    against the paper without deciding."""
    found = []
    for v in judged:
        for r in v.rows:
            if r.status in DECIDED or r.status == NOT_AT_CONDITIONS or r.interval is None or r.threshold is None:
                continue
            if _against(r.interval.estimate, v.claim.comparison, r.threshold):
                found.append(f"`{v.claim.id}` for {v.subject}: {r.other + ': ' if len(v.rows) > 1 and r.other else ''}"
                             f"{r.ours}")
    if not found:
        return ""
    more = f"; {len(found) - SHOWN} more in the table" if len(found) > SHOWN else ""
    return "**Against the paper, not decided**: " + "; ".join(found[:SHOWN]) + more + "."


def _against(estimate: float, comparison: str, threshold: float) -> bool:
    return estimate <= threshold if comparison in (">", ">=") else estimate >= threshold


def _short(v: Verdict) -> str:
    failed = [r for r in v.rows if r.status == FAIL]
    return "; ".join((f"{r.other}: " if len(v.rows) > 1 and r.other else "") + r.ours for r in failed)


def _or_none(value):
    try:
        return value()
    except NotMeasured:
        return None
