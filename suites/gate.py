"""`laco gate RUN`: the release gate. Every claim gated for the run's profile must PASS.

INCONCLUSIVE blocks (the evidence does not decide: the gate says how many items would), and so do
*not measured* (unless --allow-missing) and *not at the claim's conditions*. A verdict that is not
measured is one of two things, and the gate says which: *not measured by the profile's design* (the
profile skips that measurement for that model on purpose: its `measurements`, a method entry's
`measurements`, `vllm.models`, or a method it does not run) or *failed to measure* (a failed, n/a,
stale or missing result of a measurement the profile asked for).
"""

from __future__ import annotations

from suites.claims import Claim, Claims
from suites.evidence import DENSE, MEASUREMENTS, Run
from suites.markdown import items_text, mark, table
from suites.outcomes import INCONCLUSIVE, NOT_MEASURED, PASS, Row, Verdict
from suites.verdicts import judge_run

BY_DESIGN, FAILED = "not measured by the profile's design", "failed to measure"
NEEDS = {  # a claim's metric group -> the measurements it reads (any one of them will do)
    "accuracy": ("accuracy",), "perplexity": ("perplexity",), "memory": ("memory",),
    "throughput": ("throughput_hf", "throughput_vllm"), "pruning_time": ("pruning_time",)}


def planned(run: Run, key: str, name: str) -> bool:
    """Whether the run's profile measures `name` for model `key` at all."""
    profile = run.profile
    if name not in (profile.get("measurements") or MEASUREMENTS) or (name == "pruning_time" and key == DENSE):
        return False
    entry = next((m for m in profile.get("methods") or [] if m.get("label") == key), None)
    if entry and entry.get("measurements") is not None and name not in entry["measurements"]:
        return False
    vllm_models = (profile.get("vllm") or {}).get("models")
    return not (name == "throughput_vllm" and vllm_models is not None and key not in vllm_models)


def needs(claim: Claim) -> tuple[str, ...]:
    if claim.kind == "loadable":
        return ("throughput_vllm",) if claim.engine == "vllm" else ()
    return NEEDS.get(claim.metric.partition(".")[0], ())


def missing_kind(run: Run, verdict: Verdict) -> str:
    """BY_DESIGN when every unmeasured row of a not-measured verdict lacks a measurement the profile skips
    for one of its models (or a model the profile does not run), else FAILED; '' for other verdicts."""
    if verdict.status != NOT_MEASURED:
        return ""
    rows = [r for r in verdict.rows if r.status == NOT_MEASURED]
    return BY_DESIGN if rows and all(_row_by_design(run, verdict, r) for r in rows) else FAILED


def _row_by_design(run: Run, verdict: Verdict, row: Row) -> bool:
    claim = verdict.claim
    if verdict.subject not in run.models or (row.other is None and claim.kind == "versus"):
        return True  # the profile runs no model of the role
    keys = [verdict.subject, row.other if row.other in run.models else DENSE]
    names = needs(claim)
    return bool(names) and any(all(not planned(run, k, n) for n in names) for k in keys)


def status_counts(run: Run, verdicts: list[Verdict], statuses: tuple[str, ...]) -> list[tuple[str, int]]:
    """(label, count) per status, 'not measured' split into by the profile's design and failed to measure."""
    out = []
    for s in statuses:
        chosen = [v for v in verdicts if v.status == s]
        if s == NOT_MEASURED:
            design = sum(missing_kind(run, v) == BY_DESIGN for v in chosen)
            out += [(BY_DESIGN, design), (FAILED, len(chosen) - design)]
        else:
            out.append((s, len(chosen)))
    return out


def blocking(verdicts: list[Verdict], allow_missing: bool = False) -> list[Verdict]:
    gated = [v for v in verdicts if v.gated]
    return [v for v in gated if v.status != PASS and not (allow_missing and v.status == NOT_MEASURED)]


def blocking_text(run: Run, blocked: list[Verdict]) -> str:
    """'2 FAIL, 18 not measured by the profile's design' (the statuses of the blocking verdicts)."""
    order = tuple(dict.fromkeys(v.status for v in blocked))
    return ", ".join(f"{n} {label}" for label, n in status_counts(run, blocked, order) if n)


def why(run: Run, v: Verdict) -> str:
    notes = [n for n in v.notes if n]
    if v.status == INCONCLUSIVE:
        needed = next((items_text(r.items_needed) for r in v.rows if r.items_needed), "")
        notes.insert(0, "the 95% interval straddles the threshold" + (f"; {needed}" if needed else ""))
    if v.status == NOT_MEASURED:
        notes.insert(0, missing_kind(run, v))
    return "; ".join(notes)


def render_gate(run: Run, claims: Claims, allow_missing: bool = False) -> tuple[str, bool]:
    verdicts = judge_run(run, claims)
    gated = [v for v in verdicts if v.gated]
    blocked = blocking(verdicts, allow_missing)
    passed = bool(gated) and not blocked
    unfinished = "" if run.meta.get("finished") else " The run has not finished."
    lines = [
        f"# laco gate: run `{run.id}` (profile {run.profile_name})",
        "",
        f"**{'PASS' if passed else 'FAIL'}**: {sum(v.status == PASS for v in gated)} of {len(gated)} gated verdicts pass"
        f"{'; ' + str(len(blocked)) + ' blocking (' + blocking_text(run, blocked) + ')' if blocked else ''}.{unfinished}"
        + ("" if gated else " No claim is gated for this profile: nothing vouches for a release."),
        "",
        table([[f"`{v.claim.id}`", v.subject, v.paper, v.ours, mark(v.status), why(run, v) if v in blocked else ""]
               for v in gated], ["claim", "model", "paper", "ours", "verdict", "why it blocks"]),
    ]
    return "\n".join(lines) + "\n", passed
