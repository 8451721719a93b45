"""`laco history RUN... [--out DIR]`: the nightly runs read as a history, not as a stream of pass/fail lines.

Each argument is a run directory or a folder holding runs (e.g. the nightly runs folder). The runs of one
profile (`--profile`, default the newest run's) are put in the order they started, and drawn figure by
figure across them:
- every gated figure: each row of each claim gated for the profile (its statistic with its 95% interval
  and the claim's threshold), for every subject model;
- dense's decode tokens/s per engine, the absolute rate a slower machine lowers: normalised by each run's
  machine probe to the first probed run's machine (bench/probe.py; see suites.compare.machine_ratio),
  drawn beside the raw rate; a run without a probe is drawn raw and said so.
Each run is compared with the one before it by `laco compare`'s own comparison (suites.compare), and a run
where it found a regression is marked in the table and in every plot. Writes DIR/history-<profile>.md and
one PNG per figure in DIR/history-<profile>/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from laco import LacoError, atomic
from suites import evidence as ev
from suites.claims import Claims
from suites.compare import Tolerances, compare_runs, machine_speed, regressions
from suites.evidence import DENSE, NotMeasured, Run, load_run
from suites.figures import Figures
from suites.markdown import details, table
from suites.verdicts import judge_run


@dataclass
class Point:
    estimate: float
    low: float
    high: float
    note: str = ""  # e.g. the verdict, or "raw: no probe"


@dataclass
class Figure:
    """One figure across the runs: {run id: Point}, with the claim's threshold when it has one."""

    title: str
    unit: str
    threshold: float | None = None
    points: dict[str, Point] = field(default_factory=dict)
    raw: dict[str, Point] = field(default_factory=dict)  # absolute rates before the probe normalisation

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.title.lower()).strip("-")


def find_runs(paths: list[str]) -> list[Run]:
    """The runs named, or held one level down in a folder named, oldest first."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "run.json").is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(d for d in p.iterdir() if (d / "run.json").is_file())
        else:
            raise LacoError(f"not a run directory nor a folder of runs: {p}")
    if not found:
        raise LacoError(f"no run (a folder with run.json) in {', '.join(paths)}")
    runs = [load_run(p) for p in dict.fromkeys(p.resolve() for p in found)]
    ids = [r.id for r in runs]
    doubled = sorted({i for i in ids if ids.count(i) > 1})
    if doubled:
        raise LacoError(f"two runs share the name {doubled[0]!r}: a history tells runs apart by their folder names")
    return sorted(runs, key=lambda r: (r.meta.get("started") or "", r.id))


def of_profile(runs: list[Run], profile: str | None) -> tuple[list[Run], list[Run]]:
    """(the runs of the profile, the others); the profile defaults to the newest run's."""
    profile = profile or runs[-1].profile_name
    chosen = [r for r in runs if r.profile_name == profile]
    if not chosen:
        raise LacoError(f"no run of profile {profile!r} among {', '.join(r.id for r in runs)}")
    return chosen, [r for r in runs if r.profile_name != profile]


def gated_figures(runs: list[Run], claims: Claims, figures: dict[str, Figures]) -> dict[str, Figure]:
    out: dict[str, Figure] = {}
    for run in runs:
        for v in judge_run(run, claims, figures[run.id]):
            if not v.gated:
                continue
            for r in v.rows:
                if r.interval is None:
                    continue
                title = f"{v.claim.id} {v.subject}" + (f" vs {r.other}" if len(v.rows) > 1 and r.other else "")
                figure = out.setdefault(title, Figure(title, v.claim.metric or v.claim.kind, r.threshold))
                figure.points[run.id] = Point(r.interval.estimate, r.interval.low, r.interval.high, r.status)
    return out


def rate_figures(runs: list[Run]) -> dict[str, Figure]:
    """Dense decode tokens/s per engine: median over rounds with their range, normalised to the first
    probed run's machine."""
    speeds = {r.id: machine_speed(r) for r in runs}
    reference = next((s for s in speeds.values() if s), None)
    out: dict[str, Figure] = {}
    for engine in ("hf", "vllm"):
        figure = Figure(f"dense {engine} decode tokens per s", "tokens/s")
        for run in runs:
            try:
                rates = np.asarray(ev.rounds(run, DENSE, engine)["per_round"]["decode_tokens_per_s"], dtype=float)
            except (NotMeasured, KeyError):
                continue
            raw = Point(float(np.median(rates)), float(rates.min()), float(rates.max()))
            scale = reference / speeds[run.id] if reference and speeds[run.id] else 1.0
            figure.raw[run.id] = raw
            figure.points[run.id] = Point(raw.estimate * scale, raw.low * scale, raw.high * scale,
                                          "" if speeds[run.id] else "raw: no probe")
        if figure.points:
            out[figure.title] = figure
    return out


def regressed(runs: list[Run], claims: Claims, tolerances: Tolerances, figures: dict[str, Figures]) -> dict[str, list[str]]:
    """{run id: what `laco compare` found regressed against the run before it}."""
    out = {}
    for a, b in zip(runs, runs[1:]):
        bad = regressions(compare_runs(a, b, tolerances, claims, figures))
        if bad:
            out[b.id] = [f"{d.model} {d.metric} ({d.status})" for d in bad]
    return out


def history(paths: list[str], claims: Claims, tolerances: Tolerances, out_dir: str | Path,
            profile: str | None = None) -> Path:
    """Write the history's markdown and its plots; returns the markdown's path."""
    from suites.plots import history_plot

    runs, others = of_profile(find_runs(paths), profile)
    figures = {r.id: Figures(r, claims.statistics.resamples, claims.statistics.seed) for r in runs}
    drawn = {**gated_figures(runs, claims, figures), **rate_figures(runs)}
    marks = regressed(runs, claims, tolerances, figures)
    name = f"history-{runs[0].profile_name}"
    out_dir = Path(out_dir)
    with atomic.folder(out_dir / name, if_exists="replace") as images:
        for figure in drawn.values():
            history_plot(figure, [r.id for r in runs], set(marks), images / f"{figure.slug}.png")
    return atomic.write_text(out_dir / f"{name}.md", render_history(runs, others, drawn, marks, name))


def render_history(runs: list[Run], others: list[Run], drawn: dict[str, Figure], marks: dict[str, list[str]],
                   name: str) -> str:
    ids = [r.id for r in runs]
    header = [f"{i + 1}" + (" ⚠" if r.id in marks else "") for i, r in enumerate(runs)]
    rows = [[f.title, f.unit, *[_cell(f.points.get(i)) for i in ids]] for f in drawn.values()]
    run_rows = [[i + 1, f"`{r.id}`", r.meta.get("started") or "-", (r.meta.get("git_commit") or "-")[:12],
                 _probe(r), "; ".join(marks.get(r.id, [])) or ("-" if i else "first run")] for i, r in enumerate(runs)]
    probed = [r for r in runs if machine_speed(r)]
    lines = [
        f"# laco history: profile {runs[0].profile_name}, {len(runs)} runs",
        "",
        f"**{len(marks)} of {len(runs) - 1} runs regressed** against the run before them (`laco compare`, its "
        "tolerances); ⚠ marks them. Gated figures: each row of every claim gated for the profile, its estimate and "
        "95% interval. Dense tokens/s: the median over rounds and their range, "
        + (f"normalised by each run's machine probe to the machine of `{probed[0].id}` (bench/probe.py); "
           if probed else "") + ("runs without a probe drawn raw." if len(probed) < len(runs) else "every run probed.")
        + " Within-run ratios (speed-ups over the run's own dense model) need no probe.",
        "",
        table(rows, ["figure", "unit", *header]),
        "",
        details("The runs, and what `laco compare` found regressed",
                table(run_rows, ["#", "run", "started", "commit", "machine probe", "regressed against the run before"])),
    ]
    if others:
        lines += ["", f"Left out, another profile: {', '.join(f'`{r.id}` ({r.profile_name})' for r in others)}."]
    lines += ["", *[f"![{f.title}]({name}/{f.slug}.png)" for f in drawn.values()]]
    return "\n".join(lines) + "\n"


def _cell(p: Point | None) -> str:
    if p is None:
        return "-"
    text = f"{p.estimate:.4g} [{p.low:.4g}, {p.high:.4g}]"
    return text + (f" {p.note}" if p.note else "")


def _probe(run: Run) -> str:
    probe = run.meta.get("probe") or {}
    if not machine_speed(run):
        return "none"
    return f"fp32 {probe['fp32_gflops']:.4g}, bf16 {probe.get('bf16_gflops', 0):.4g} GFLOP/s, {probe['memory_gbps']:.4g} GB/s"
