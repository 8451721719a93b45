"""The LaCo paper's own figures (paper_figures.toml), to stand beside ours with their table numbers.

The figures are copied from the transcription of the paper's tables that the project works from
(`../shared/paper/laco-paper-tables.md`, not shipped), cell by cell, with the transcription's repairs
(R1..R23) and filled cells (marked † there) named on each row. Every figure shown in a report carries
its table number; a figure of another model than the run's is labelled as such. The citations the
verdicts show are formatted here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, model_validator

from laco.config import Strict, load


class Benchmark(Strict):
    """A column of the paper's main tables and what stands for it in our runs."""

    task: str = ""  # our lm-eval task; "" when lm-eval has none
    category: str = ""  # the paper's category (Reasoning, Language, Knowledge, Examination, Understanding)
    note: str = ""  # how our task differs from the paper's measurement
    choices: int | None = Field(default=None, ge=2)  # options per item in the paper's scoring: chance = 1 / choices
    no_chance: str = ""  # why there is no single chance level (generation mode, varying options)


class PaperRow(Strict):
    model: str  # the paper's model name, e.g. "Llama2-7B"
    method: str = ""  # our method name (dense, dense-official, laco, llm-pruner, slicegpt, drop, rule-merge, ...)
    setting: str = ""  # the row label of an ablation table (e.g. "C=2", "T=0.85")
    ratio: float | None = None  # fraction of parameters removed
    layers: int | None = None
    values: dict[str, float] = Field(default_factory=dict)  # column -> figure as printed
    unreadable: list[str] = Field(default_factory=list)  # columns printed "?" (not recoverable)
    filled: list[str] = Field(default_factory=list)  # columns filled from another table of the paper (†)
    repairs: list[str] = Field(default_factory=list)  # the transcription's repairs behind this row (R..)
    note: str = ""


class PaperTable(Strict):
    number: int = Field(ge=1)
    title: str
    unit: str  # e.g. "OpenCompass score, 0-100", "%", "MB", "tokens/s", "s"
    protocol: str = ""
    columns: list[str]
    rows: list[PaperRow]
    note: str = ""

    @model_validator(mode="after")
    def _columns_known(self) -> PaperTable:
        for row in self.rows:
            unknown = (set(row.values) | set(row.unreadable) | set(row.filled)) - set(self.columns)
            if unknown:
                raise ValueError(f"table {self.number}, {row.model} {row.method or row.setting}: "
                                 f"columns {sorted(unknown)} are not among {self.columns}")
        return self


class PaperFiguresFile(Strict):
    source: str
    transcription: str
    reference_model: str = "Llama2-7B"  # whose figures stand beside a run of a model the paper did not prune
    models: dict[str, str]  # bench profile name -> the paper's model name
    methods: dict[str, str]  # our method name -> the paper's row label
    benchmarks: dict[str, Benchmark]
    tables: list[PaperTable]

    @model_validator(mode="after")
    def _unique_tables(self) -> PaperFiguresFile:
        numbers = [t.number for t in self.tables]
        if len(set(numbers)) != len(numbers):
            raise ValueError("a table number is used twice")
        return self


@dataclass(frozen=True)
class Figure:
    value: float
    table: int
    model: str
    column: str
    repairs: tuple[str, ...] = ()
    filled: bool = False

    def text(self, unit: str = "") -> str:
        """The figure as printed, marked † where it was filled from another table of the paper."""
        return f"{self.value:g}{unit}{'†' if self.filled else ''}"

    def cite(self, unit: str = "") -> str:
        repairs = f", {'/'.join(self.repairs)}" if self.repairs else ""
        return f"{self.text(unit)} (Table {self.table}{repairs}, {self.model})"


@dataclass(frozen=True)
class AboveChance:
    """A model's above-chance retention in the paper's own Table 1: (avg - chance) / (dense avg - chance)
    over the benchmarks with a chance level where Dense* is above it."""

    value: float
    model: str
    method: str
    used: tuple[str, ...]
    left_out: tuple[str, ...]  # each "COLUMN: why"

    def cite(self, own: bool) -> str:
        return (f"{self.method} {100 * self.value:.1f}% (Table 1 under the same formula, {Paper.label(self.model, own)}; "
                f"{len(self.used)} benchmarks, left out: {'; '.join(self.left_out) or 'none'})")


PLAIN_DENSE = (3, 4, 5, 19, 20)  # tables whose authors' dense row is printed "Dense", not "Dense*"
UNITS = {"%": "%", "MB": " MB", "tokens/s": " tok/s", "s": " s"}  # a table's unit -> the suffix of its figures


class Paper:
    def __init__(self, data: PaperFiguresFile, path: Path):
        self.data, self.path = data, path
        self._tables = {t.number: t for t in data.tables}

    def table(self, number: int) -> PaperTable | None:
        return self._tables.get(number)

    def model_of(self, profile: str) -> tuple[str, bool]:
        """(the paper's model for this profile, whether it is the run's own model)."""
        own = self.data.models.get(profile)
        return (own, True) if own else (self.data.reference_model, False)

    def rows(self, number: int, model: str | None = None, method: str | None = None,
             setting: str | None = None) -> list[PaperRow]:
        table = self.table(number)
        if table is None:
            return []
        return [r for r in table.rows if (model is None or r.model == model) and (method is None or r.method == method)
                and (setting is None or r.setting == setting)]

    def figure(self, number: int, column: str, model: str, method: str | None = None,
               setting: str | None = None) -> Figure | None:
        """One figure of a table, or None when the paper has none for that model and row."""
        for row in self.rows(number, model, method, setting):
            if column in row.values:
                return Figure(row.values[column], number, model, column, tuple(row.repairs), column in row.filled)
        return None

    # -- citations: the paper's figures in the words a verdict shows them -------------------------------
    @staticmethod
    def label(model: str, own: bool) -> str:
        """The paper's model, marked when it is not the run's own."""
        return model + ("" if own else " (another model)")

    def cite_method(self, number: int, columns: list[str], model: str, method: str) -> str:
        """One method's figures in columns of a table: 'LaCo 80.28', 'LaCo Avg. 48.6 / Per. 80.28†';
        '' when the paper has none of them."""
        table = self.table(number)
        unit = UNITS.get(table.unit if table else "", "")
        parts = []
        for column in columns:
            figure = self.figure(number, column, model, method)
            if figure:
                parts.append(("" if len(columns) == 1 else f"{column} ") + figure.text(unit))
        return f"{self.label_in(number, method)} {' / '.join(parts)}" if parts else ""

    def label_in(self, number: int, method: str) -> str:
        """A method's row label as the table prints it: the authors' dense row is "Dense*" where the paper
        tells it from the leaderboard's, but printed "Dense" in PLAIN_DENSE (paper_figures.toml's header)."""
        return "Dense" if method == "dense" and number in PLAIN_DENSE else self.data.methods.get(method, method)

    def source(self, number: int, columns: list[str], model: str, own: bool) -> str:
        """Where cited figures stand: 'Table 2 Per., Llama2-7B (another model)'."""
        return f"Table {number}{' ' + columns[0] if len(columns) == 1 else ''}, {self.label(model, own)}"

    def cite_lowest(self, number: int, model: str, method: str, own: bool) -> str:
        """The lowest benchmark figure of a method's row: 'lowest 61.2% (BoolQ), Table 2, Llama2-7B'."""
        row = next(iter(self.rows(number, model, method)), None)
        if row is None:
            return ""
        worst = min(row.values, key=row.values.get)
        return f"lowest {row.values[worst]:g}% ({worst}), Table {number}, {self.label(model, own)}"

    def above_chance(self, model: str, method: str = "laco") -> AboveChance | None:
        """The paper's own above-chance retention of `method` on `model` (Table 1, Dense* as dense, chance
        = 100 / choices per benchmark); a benchmark without a chance level, without both figures, or where
        Dense* is not above chance is left out, as our retention claims leave it out. None when the paper
        has no Table 1 row of both."""
        dense, pruned = self.rows(1, model, "dense"), self.rows(1, model, method)
        if not dense or not pruned:
            return None
        used, left_out, d, p, c = [], [], [], [], []
        for column in self.table(1).columns:
            bench = self.data.benchmarks.get(column)
            dv, pv = dense[0].values.get(column), pruned[0].values.get(column)
            if bench is None or bench.choices is None:
                left_out.append(f"{column}: {bench.no_chance if bench else 'not a benchmark of this file'}")
            elif dv is None or pv is None:
                left_out.append(f"{column}: not printed")
            elif dv <= 100 / bench.choices:
                left_out.append(f"{column}: Dense* {dv:g} not above chance {100 / bench.choices:.1f}")
            else:
                used.append(column)
                d, p, c = d + [dv], p + [pv], c + [100 / bench.choices]
        if not used:
            return None
        chance = sum(c) / len(c)
        value = (sum(p) / len(p) - chance) / (sum(d) / len(d) - chance)
        return AboveChance(value, model, self.data.methods.get(method, method), tuple(used), tuple(left_out))

    def benchmark_of_task(self, task: str) -> tuple[str, Benchmark] | None:
        for name, b in self.data.benchmarks.items():
            if b.task == task:
                return name, b
        return None


def load_paper(path: str | Path) -> Paper:
    return Paper(load(path, PaperFiguresFile, "paper figures"), Path(path))
