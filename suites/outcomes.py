"""What a verdict is: its five statuses, how an interval decides against a threshold, and the records
a verdict is made of.

PASS when the whole 95% interval of the claim's statistic lies on the claim's side of its threshold,
FAIL when it lies wholly on the other side, INCONCLUSIVE when it straddles the threshold. Apart from
these three: *not measured* (a value is missing, n/a, failed or stale) and *not at the claim's
conditions* (the model is outside the ratio band the paper states, or the other model is not at a
matched ratio). Neither of those is ever a pass.

Each comparison of a subject with one other model (or one benchmark) is a `Row`; a `Verdict` gathers
the rows of one (claim, subject) pair: it passes only when every row passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from laco import LacoError
from suites import statistics as st
from suites.claims import Claim

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
