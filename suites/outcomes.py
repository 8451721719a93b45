"""What a verdict is: its statuses, how an interval decides against a threshold, and the records a
verdict is made of.

PASS when the whole 95% interval of the claim's statistic lies on the claim's side of its threshold,
FAIL when it lies wholly on the other side (for a claim of several rows: at the row's Holm-adjusted
level, below), INCONCLUSIVE when it straddles the threshold. EQUAL ("equal (within margin)") when a
comparative claim declares an equivalence margin and the whole interval lies inside it: the two figures
are the same to within what the claim counts as a difference, which is neither a pass nor a fail, and
never gated as a pass. Apart from these: *not measured* (a value is missing, n/a, failed or stale) and
*not at the claim's conditions* (the model is outside the ratio band the paper states, or the other
model is not at a matched ratio). Neither of those is ever a pass.

Each comparison of a subject with one other model (or one benchmark) is a `Row`; a `Verdict` gathers
the rows of one (claim, subject) pair. It passes only when every row passes, and fails when any row
fails. So that the chance of a false FAIL does not grow with the rows, the rows' FAIL tests are
corrected by Holm's step-down over their one-sided p-values (`apply_holm`, `suites.statistics.holm`);
a PASS needs every row and needs no correction. The family-wise level of a verdict is 5%: 2.5% on each
side, the two tails of the 95% interval.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from laco import LacoError
from suites import statistics as st
from suites.claims import Claim

PASS, FAIL, INCONCLUSIVE = "PASS", "FAIL", "INCONCLUSIVE"
EQUAL = "equal (within margin)"
NOT_MEASURED, NOT_AT_CONDITIONS = "not measured", "not at the claim's conditions"
STATUSES = (PASS, FAIL, EQUAL, INCONCLUSIVE, NOT_MEASURED, NOT_AT_CONDITIONS)
DECIDED = (PASS, FAIL)
JUDGED = (PASS, FAIL, EQUAL, INCONCLUSIVE)  # a row that was tested (the family Holm corrects)


def decide(interval: st.Interval, comparison: str, threshold: float,
           equal_band: tuple[float, float] | None = None) -> str:
    """PASS / FAIL / INCONCLUSIVE by where the whole interval lies against the threshold; EQUAL first
    when the whole interval lies strictly inside `equal_band` (the claim's equivalence margin)."""
    low, high = interval.low, interval.high
    if equal_band is not None and equal_band[0] < low and high < equal_band[1]:
        return EQUAL
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
    """One comparison: the subject vs `other` (a model, or a benchmark of a per-benchmark claim).

    p_value: the one-sided p-value of the row's FAIL test, H0 "the statistic lies on the claim's side of
    the threshold" (bootstrap: the share of resamples on the claim's side; t interval: the t tail; exact
    figures: 0 or 1). adjusted_level: the Holm-adjusted level the row's FAIL was tested at (2.5% for a
    row alone). coverage: the documented actual coverage of the row's interval at its sample size where
    that is below 95% (else None). items_needed: per task, the items at which the claim would be decided
    with 80% probability if the observed effect were true, or "not decidable on this benchmark (N
    available)" where the data set has fewer."""

    status: str
    other: str | None
    ours: str
    note: str = ""
    interval: st.Interval | None = None
    threshold: float | None = None
    paper: str = ""  # the paper's figure for this comparison
    items_needed: dict[str, int | str] | None = None
    engine: str = ""  # which throughput engine decided it
    flags: list[str] = field(default_factory=list)  # bound checks: "implausible: noise", "at chance"
    p_value: float | None = None
    adjusted_level: float | None = None
    coverage: float | None = None
    items: dict[str, int] | None = None  # items per task the interval was computed on (accuracy rows)


@dataclass
class Verdict:
    claim: Claim
    subject: str
    rows: list[Row]
    gated: bool
    paper: str  # the paper's figure (statement or cited number) for this run's model
    ratio: float | None = None  # the subject's pruning ratio
    family_level: float | None = None  # the family-wise level of the rows' tests (Holm), 0.05
    left_out: list[str] = field(default_factory=list)  # benchmarks left out of the claim, each with its reason

    @property
    def status(self) -> str:
        """FAIL when a row fails, else INCONCLUSIVE or not measured when one is, else EQUAL when a row is
        equal within the margin, else PASS. A comparison outside the claim's conditions (a baseline not at a
        matched ratio) is out of its scope and shown; only when nothing is left in scope is the verdict
        'not at the claim's conditions'."""
        statuses = [r.status for r in self.rows if r.status != NOT_AT_CONDITIONS]
        if not self.rows:
            return NOT_MEASURED
        if not statuses:
            return NOT_AT_CONDITIONS
        for s in (FAIL, INCONCLUSIVE, NOT_MEASURED, EQUAL):
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


def apply_holm(rows: list[Row], level: float = st.SIDE_LEVEL) -> float | None:
    """Holm's step-down over the FAIL tests of the rows that were judged with a p-value: each gets its
    adjusted level, and a FAIL whose p-value is above it becomes INCONCLUSIVE (its interval lies beyond
    the threshold, but not at the level a claim of this many rows needs). Returns the family-wise level
    (two-sided: 2 x `level`), None when no row was tested."""
    tested = [r for r in rows if r.status in JUDGED and r.p_value is not None]
    if not tested:
        return None
    levels, rejected = st.holm([r.p_value for r in tested], level)
    for row, adjusted, fails in zip(tested, levels, rejected):
        row.adjusted_level = adjusted
        if row.status == FAIL and not fails:
            row.status = INCONCLUSIVE
            row.flags.append(f"beyond the threshold at 95%, not at the Holm level of {len(tested)} rows "
                             f"(p = {row.p_value:.3g} > {adjusted:.3g})")
    return 2 * level
