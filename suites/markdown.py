"""Markdown for the reports, the suites' printout, `laco gate`, `laco compare` and `laco history`: GitHub
pipe tables (tabulate), collapsed blocks, the verdict marks and the formatting of numbers in cells."""

from __future__ import annotations

import re
from collections.abc import Iterable

from tabulate import tabulate

from suites import statistics as st
from suites.evidence import DENSE, Run
from suites.outcomes import EQUAL, FAIL, INCONCLUSIVE, NOT_AT_CONDITIONS, NOT_MEASURED, PASS, Row

VERDICT_MARK = {PASS: "PASS", FAIL: "**FAIL**", INCONCLUSIVE: "*INCONCLUSIVE*", EQUAL: "= equal (within margin)",
                NOT_MEASURED: "not measured", NOT_AT_CONDITIONS: "not at the claim's conditions"}
EMPTY = ("", "-")


def mark(status: str) -> str:
    """A verdict's mark; a status this module does not know yet is shown as it is."""
    return VERDICT_MARK.get(status, status)


def table(rows: Iterable[Iterable], headers: list[str], align: str | None = None) -> str:
    """A GitHub pipe table; '|' inside a cell is escaped so it cannot break the row."""
    cells = [[cell(c) for c in row] for row in rows]
    return tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=[align] * len(headers) if align else None)


def compact_table(rows: list[list], headers: list[str], keys: int = 1) -> tuple[str, list[str], int]:
    """A table without the columns and rows where nothing was measured (every cell after the first `keys`
    empty or '-'): (the table, the headers left out, how many rows were left out)."""
    def empty(c) -> bool:
        return cell(c).strip() in EMPTY

    kept_rows = [r for r in rows if not all(empty(c) for c in r[keys:])]
    columns = [i for i in range(len(headers)) if i < keys or not all(empty(r[i]) for r in kept_rows)]
    dropped = [headers[i] for i in range(len(headers)) if i not in columns]
    text = table([[r[i] for i in columns] for r in kept_rows], [headers[i] for i in columns]) if kept_rows else ""
    return text, dropped, len(rows) - len(kept_rows)


def details(summary: str, *body: str) -> str:
    """A collapsed block of lines ("" a blank line, runs of them kept to one); the blank line after the
    summary lets GitHub render the tables inside."""
    inner = re.sub(r"\n{3,}", "\n\n", "\n".join(body)).strip("\n")
    return f"<details><summary>{summary}</summary>\n\n{inner}\n\n</details>"


def cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def num(x, fmt: str = "{:.1f}") -> str:
    """A number in a cell, '-' when there is none."""
    return "-" if x is None else fmt.format(x)


def factor(x: float) -> str:
    """A factor a reader takes in at a glance: 1.73, 18.4, 1,840, 4.07e+10."""
    return f"{x:.3g}" if abs(x) >= 1e5 or abs(x) < 100 else f"{x:,.0f}"


def times(x: float) -> str:
    return f"×{factor(x)}"


def times_interval(interval: st.Interval) -> str:
    """A ratio with its interval: ×1,840 [1,370, 2,490]."""
    return f"×{factor(interval.estimate)} [{factor(interval.low)}, {factor(interval.high)}]"


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


def coverage_of(figure) -> str:
    """' (~83% coverage)' beside an interval (or a verdict's row) whose actual coverage is below its nominal 95%."""
    coverage = getattr(figure, "coverage", None)
    return f" (~{coverage:.0%} coverage)" if coverage else ""


def row_text(row: Row, several: bool) -> str:
    """A row's figure as a verdict shows it: ours with its interval, its coverage when below 95%, and in a
    claim of several rows the other side's name and the Holm-adjusted level the row was decided at."""
    text = row.ours + coverage_of(row)
    level = getattr(row, "adjusted_level", None)
    if several and level is not None and row.status != NOT_AT_CONDITIONS:
        text += f" (level {level:.3g})"
    return f"{row.other}: {text}" if several and row.other else text


def items_text(needed: dict | None) -> str:
    """The items per task that would decide an undecided row, as the verdict gives them: a count, or
    the words saying the benchmark cannot decide it."""
    if not needed:
        return ""
    return "items to decide: " + ", ".join(f"{task} {n}" for task, n in needed.items())
