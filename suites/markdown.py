"""Markdown for the reports, the suites' printout, `laco gate` and `laco compare`: GitHub pipe tables
(tabulate), the verdict marks and the formatting of numbers in cells."""

from __future__ import annotations

from collections.abc import Iterable

from tabulate import tabulate

from suites import statistics as st
from suites.evidence import DENSE, Run
from suites.outcomes import EQUAL, FAIL, INCONCLUSIVE, NOT_AT_CONDITIONS, NOT_MEASURED, PASS

VERDICT_MARK = {PASS: "PASS", FAIL: "**FAIL**", EQUAL: "equal (within margin)", INCONCLUSIVE: "*INCONCLUSIVE*",
                NOT_MEASURED: "not measured", NOT_AT_CONDITIONS: "not at the claim's conditions"}


def table(rows: Iterable[Iterable], headers: list[str], align: str | None = None) -> str:
    """A GitHub pipe table; '|' inside a cell is escaped so it cannot break the row."""
    cells = [[cell(c) for c in row] for row in rows]
    return tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=[align] * len(headers) if align else None)


def cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def num(x, fmt: str = "{:.1f}") -> str:
    """A number in a cell, '-' when there is none."""
    return "-" if x is None else fmt.format(x)


def pct(x: float) -> str:
    """A fraction as percent with one decimal, no sign: 0.4125 -> '41.2'."""
    return f"{100 * x:.1f}"


def pct_interval(interval: st.Interval) -> str:
    return interval.fmt(".1f", 100) + " %"


def pruned_text(ratio: float | None) -> str:
    """A model's pruning ratio in a verdict: 'pruned 27.0%'."""
    return f"pruned {ratio:.1%}" if ratio is not None else "-"


def ratio_cell(run: Run, key: str) -> str:
    """A model's pruning ratio in a table: '27.0%', '-' for dense or when not recorded."""
    r = run.models[key].pruning_ratio
    return "-" if key == DENSE else f"{r:.1%}" if r is not None else "-"
