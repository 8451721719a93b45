"""`laco gate RUN`: the release gate. Every claim gated for the run's profile must PASS.

INCONCLUSIVE blocks (the evidence does not decide: the gate says how many items would), and so do
*not measured* (unless --allow-missing) and *not at the claim's conditions*.
"""

from __future__ import annotations

from suites.claims import Claims
from suites.evidence import Run
from suites.markdown import VERDICT_MARK, table
from suites.outcomes import INCONCLUSIVE, NOT_MEASURED, PASS, Verdict
from suites.verdicts import judge_run


def blocking(verdicts: list[Verdict], allow_missing: bool = False) -> list[Verdict]:
    gated = [v for v in verdicts if v.gated]
    return [v for v in gated if v.status != PASS and not (allow_missing and v.status == NOT_MEASURED)]


def why(v: Verdict) -> str:
    notes = [n for n in v.notes if n]
    if v.status == INCONCLUSIVE:
        needed = [r.items_needed for r in v.rows if r.items_needed]
        decide = ("; decides at about " + ", ".join(f"{t} {n}" for t, n in needed[0].items()) + " items") if needed else ""
        notes.insert(0, "the 95% interval straddles the threshold" + decide)
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
        f"{'; ' + str(len(blocked)) + ' blocking' if blocked else ''}.{unfinished}"
        + ("" if gated else " No claim is gated for this profile: nothing vouches for a release."),
        "",
        table([[f"`{v.claim.id}`", v.subject, v.paper, v.ours, VERDICT_MARK[v.status], why(v) if v in blocked else ""]
               for v in gated], ["claim", "model", "paper", "ours", "verdict", "why it blocks"]),
    ]
    return "\n".join(lines) + "\n", passed
