"""The verdicts in a report: the one table of the first screen (every claim judged at its conditions, with
the paper's figure beside ours), a line per ablation variant, and the verdicts in full below it.

An ablation variant (a model of the paper's Appendix B tables other than the reference) is judged on
the same claims as the reference; its verdicts are one line each: the decided ones named on the first
screen, the undecided ones collapsed into the full list.
"""

from __future__ import annotations

from suites.claims import Claims
from suites.evidence import Run
from suites.gate import BY_DESIGN, missing_kind
from suites.markdown import EQUAL, details, items_text, mark, row_text, table
from suites.outcomes import DECIDED, NOT_AT_CONDITIONS, NOT_MEASURED, Verdict
from suites.report.sweeps import is_variant, paper_ref

DECIDED_OR_EQUAL = (*DECIDED, EQUAL)


def at_conditions(verdicts: list[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if v.status != NOT_AT_CONDITIONS]


def ours(v: Verdict) -> str:
    several = len(v.rows) > 1
    return "; ".join(row_text(r, several) for r in v.rows)


def verdict_mark(run: Run, v: Verdict) -> str:
    """The verdict's mark; a verdict not measured says whether by the profile's design or by a failure."""
    return (missing_kind(run, v) or mark(v.status)) + (" (gated)" if v.gated else "")


def claims_section(run: Run, verdicts: list[Verdict], claims: Claims, band: str) -> str:
    """The first screen's table: one row per claim and subject at the claim's conditions (ablation
    variants one line each below it), the verdicts outside their conditions summarised in a line."""
    judged = [v for v in at_conditions(verdicts) if not is_variant(run, v.subject) and not _by_design(run, v)]
    rows = [[f"`{v.claim.id}`", v.subject, v.paper, ours(v), verdict_mark(run, v)] for v in judged]
    s = claims.statistics
    holm = next((getattr(v, "family_level", None) for v in verdicts if getattr(v, "family_level", None)), None)
    lines = [
        "## Claims at the paper's conditions",
        "",
        f"{band} Each claim is decided by where its {s.confidence:.0%} interval lies: PASS wholly on the claim's side of "
        "the threshold, FAIL wholly on the other side, INCONCLUSIVE across it"
        + (", *equal (within margin)* wholly inside the claim's equivalence margin" if any(v.status == EQUAL for v in verdicts)
           else "") + "."
        + (f" The rows of one claim are decided together at a family-wise level of {holm:.0%} (Holm); each row shows "
           "the level it was decided at." if holm else ""),
        "",
        table(rows, ["claim", "model", "paper", "ours [95% interval]", "verdict"]) if rows
        else "No claim was judged at its conditions.",
    ]
    lines += _left_out(judged) + _variant_lines(run, verdicts, decided=True) + _design_lines(run, verdicts)
    outside = [v for v in verdicts if v.status == NOT_AT_CONDITIONS]
    if outside:
        lines += ["", f"{len(outside)} verdicts not at the claim's conditions ({_by_ratio(outside)}): see *Verdicts in "
                  "full* below."]
    return "\n".join(lines)


def _by_design(run: Run, v: Verdict) -> bool:
    return missing_kind(run, v) == BY_DESIGN


def _design_lines(run: Run, verdicts: list[Verdict]) -> list[str]:
    """The verdicts the profile leaves unmeasured on purpose, one line per set of claims alike."""
    subjects: dict[str, list[str]] = {}
    for v in verdicts:
        if _by_design(run, v):
            subjects.setdefault(f"`{v.claim.id}`", []).append(v.subject)
    if not subjects:
        return []
    groups: dict[tuple, list[str]] = {}
    for claim, keys in subjects.items():
        groups.setdefault(tuple(keys), []).append(claim)
    return ["", "Not measured by the profile's design (a measurement it skips for the model, or a method it does not "
            "run): "
            + "; ".join(f"{', '.join(claims)} for {_models(keys)}" for keys, claims in groups.items()) + "."]


def _models(keys: tuple) -> str:
    return ", ".join(keys) if len(keys) <= 3 else f"{len(keys)} models ({keys[0]}, …, {keys[-1]})"


def _by_ratio(outside: list[Verdict]) -> str:
    """'laco-c5, laco-i3 31.6%; laco-t85 7.9%': the subjects outside their conditions, by their ratio."""
    ratios: dict[str, list[str]] = {}
    for v in outside:
        keys = ratios.setdefault(_ratio(v), [])
        if v.subject not in keys:
            keys.append(v.subject)
    return "; ".join(f"{', '.join(keys)} {ratio}" for ratio, keys in ratios.items())


def _ratio(v: Verdict) -> str:
    return f"{v.ratio:.1%}" if v.ratio is not None else "ratio not recorded"


def _left_out(verdicts: list[Verdict]) -> list[str]:
    """Benchmarks the claims left out (dense not above chance), each with the claims it was left out of."""
    out: dict[str, list[str]] = {}
    for v in verdicts:
        for reason in getattr(v, "left_out", None) or []:
            out.setdefault(reason, []).append(v.claim.id)
    if not out:
        return []
    return ["", "Left out: " + "; ".join(f"{r} ({', '.join(dict.fromkeys(ids))})" for r, ids in out.items()) + "."]


def _variant_lines(run: Run, verdicts: list[Verdict], decided: bool) -> list[str]:
    """One line per ablation variant at the claims' conditions: its decided verdicts (first screen), or its
    undecided ones (in full)."""
    by_subject: dict[str, list[Verdict]] = {}
    for v in at_conditions(verdicts):
        if is_variant(run, v.subject):
            by_subject.setdefault(v.subject, []).append(v)
    lines = []
    for key, vs in by_subject.items():
        vs = [v for v in vs if not _by_design(run, v)]
        chosen = [v for v in vs if (v.status in DECIDED_OR_EQUAL) == decided]
        groups: dict[str, list[str]] = {}
        for v in chosen:
            groups.setdefault(_status_label(run, v), []).append(f"`{v.claim.id}`")
        text = "; ".join(f"{status} {', '.join(ids)}" for status, ids in groups.items()) or "none"
        rest = len(vs) - len(chosen)
        tail = f"; {rest} undecided (*Verdicts in full*)" if decided and rest else ""
        setting = (paper_ref(run, key) or {}).get("setting") or run.models[key].point or ""
        if vs and (chosen or decided):
            lines.append(f"- **{key}** ({setting}, {_ratio(vs[0])}): {text}{tail}")
    if not lines:
        return []
    head = ("Ablation variants at the claims' conditions, judged on the same claims (their decided verdicts):" if decided
            else "Ablation variants, their verdicts that decided nothing:")
    return ["", head, "", *lines]


def _status_label(run: Run, v: Verdict) -> str:
    return "failed to measure" if v.status == NOT_MEASURED else mark(v.status)


def full_section(run: Run, verdicts: list[Verdict], claims: Claims) -> str:
    """Every judged verdict with its notes, the ablation variants' undecided ones, the verdicts outside
    their conditions by model, and what each claim says."""
    judged = [v for v in at_conditions(verdicts) if not is_variant(run, v.subject) and not _by_design(run, v)]
    rows = [[f"`{v.claim.id}`", v.subject, ours(v), verdict_mark(run, v), "; ".join(_notes(v))] for v in judged]
    s = claims.statistics
    body = [
        "Accuracy intervals come from a paired bootstrap over the items both models answered, resampled within each "
        f"task ({s.resamples} resamples, seed {s.seed}); perplexity pairs the windows; throughput pairs interleaved rounds; "
        "parameter memory is exact. An undecided row names the items per task that would decide it. *not measured* and "
        "*not at the claim's conditions* are never passes; `pytest suites --run` asserts the same verdicts.",
        "", table(rows, ["claim", "model", "ours [95% interval]", "verdict", "note"]) if rows else "",
        *_variant_lines(run, verdicts, decided=False), *_design_lines(run, verdicts), *_outside_lines(verdicts),
    ]
    legend = [[f"`{c.id}`", c.statement, c.source] for c in claims.claims
              if c.stage == "pruned" or run.post_trained]  # post-training's claims: only where a model was trained
    return "\n".join(["## Verdicts in full", "",
                      details(f"All {len(verdicts)} verdicts: notes, items to decide, verdicts outside their conditions",
                              *body),
                      "", details("What each claim says, and where the paper says it",
                                  table(legend, ["claim", "statement", "source"]))])


def _notes(v: Verdict) -> list[str]:
    notes = [n for n in v.notes if n]
    for r in v.rows:
        p = getattr(r, "p_value", None)
        if p is not None and len(v.rows) > 1:
            notes.append(f"{r.other}: p = {p:.3g}")
        needed = items_text(r.items_needed)
        if needed:
            notes.append((f"{r.other}: " if len(v.rows) > 1 and r.other else "") + needed)
    notes += [f"left out {x}" for x in getattr(v, "left_out", None) or []]
    return list(dict.fromkeys(notes))


def _outside_lines(verdicts: list[Verdict]) -> list[str]:
    """The verdicts outside their conditions, one line per reason (the model's name taken out of it)."""
    reasons: dict[str, list[str]] = {}
    for v in verdicts:
        if v.status == NOT_AT_CONDITIONS:
            note = next((n for n in v.notes if n), "")
            keys = reasons.setdefault(note.replace(v.subject, "the model"), [])
            keys.append(v.subject)
    if not reasons:
        return []
    lines = [f"- {', '.join(dict.fromkeys(keys))}: {reason} ({len(keys)} verdicts)" for reason, keys in reasons.items()]
    return ["", "Not at the claims' conditions (not judged, never a pass):", "", *lines]
