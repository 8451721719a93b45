"""The head of a report: the run in a few lines with the verdict counts and the release gate, the run
in full (collapsed), which models are at the paper's conditions, and the checks of the run's figures."""

from __future__ import annotations

from datetime import datetime

from suites.checks import run_checks
from suites.claims import Claims
from suites.evidence import DENSE, MEASUREMENTS, Run
from suites.figures import Figures
from suites.gate import blocking, blocking_text, status_counts
from suites.markdown import details, table
from suites.outcomes import STATUSES, Verdict
from suites.report.models import not_reached
from suites.verdicts import Judge


def gate_outcome(run: Run, verdicts: list[Verdict]) -> str:
    gated = [v for v in verdicts if v.gated]
    if not gated:
        return "FAIL (no gated claim)"
    blocked = blocking(verdicts)
    return "PASS" if not blocked else f"FAIL (gated: {blocking_text(run, blocked)})"


def header(run: Run, verdicts: list[Verdict]) -> str:
    """The first lines: what ran where, how long, and what the verdicts and the gate say."""
    meta, profile = run.meta, run.profile
    model = profile.get("model") or {}
    device = dict(meta.get("device") or {})
    where = device.pop("device", model.get("device") or "-")
    spec = " / ".join(dict.fromkeys(x for x in (model.get("spec"), _source_model(run)) if x and x != "-")) or "-"
    counts = " · ".join(f"{n} {s}" for s, n in status_counts(run, verdicts, STATUSES) if n)
    commit = (meta.get("git_commit") or "-")[:12]
    return "\n".join([
        f"# laco-bench report: run `{run.id}`",
        "",
        f"Profile **{run.profile_name}**: {spec}, {_dtypes(model)} on {where} "
        f"({', '.join(f'{k} {v}' for k, v in device.items()) or '-'}).  ",
        *synthetic_line(run),
        *unfinished_line(run),
        f"Commit `{commit}` · wall time {_wall_time(meta.get('started'), meta.get('finished'))} · "
        f"seed {meta.get('seed', '-')} · machine probe: {probe_text(meta.get('probe'))}.",
        "",
        f"**{counts}** of {len(verdicts)} verdicts. Release gate (`laco gate`): **{gate_outcome(run, verdicts)}**.",
    ])


def unfinished_line(run: Run) -> list[str]:
    """A run that never finished (killed, or still running) says so before any figure, with what it lacks."""
    if run.meta.get("finished"):
        return []
    missing = not_reached(run)
    lacks = (f": {len(missing)} of the profile's {len(run.profile.get('methods') or [])} pruned models not reached "
             f"({', '.join(missing)})" if missing else "")
    return [f"**Run not finished**{lacks}; its verdicts judge what it measured.  "]


def probe_text(probe: dict | None) -> str:
    """The machine probe of the run (bench/probe.py), what `laco compare` normalises absolute rates by."""
    if not probe or probe.get("error"):
        return "none recorded" + (f" ({probe['error']})" if probe and probe.get("error") else "")
    return (f"fp32 {probe.get('fp32_gflops', 0):,.0f} GFLOP/s, bf16 {probe.get('bf16_gflops', 0):,.0f} GFLOP/s, "
            f"memory {probe.get('memory_gbps', 0):,.1f} GB/s")


def run_section(run: Run) -> str:
    """Everything about the run that the first lines leave out."""
    meta = run.meta
    libs = meta.get("libraries") or {}
    rows = [
        ["device", ", ".join(f"{k}={v}" for k, v in (meta.get("device") or {}).items()) or "-"],
        ["dtype", _dtypes(run.profile.get("model") or {})],
        ["started / finished", f"{meta.get('started') or '-'} / {meta.get('finished') or 'not finished'}"],
        ["wall time", _wall_time(meta.get("started"), meta.get("finished"))],
        *([["resumed", _resumed(run)]] if meta.get("resumed") else []),
        ["git commit", meta.get("git_commit") or "-"],
        ["code versions", _code_versions(run, run.commits())],
        ["libraries", ", ".join(f"{k} {v}" for k, v in libs.items()) or "-"],
        ["machine probe", probe_text(meta.get("probe"))],
    ]
    return "\n".join(["## The run", "", details("Start and end, code, libraries, machine probe", table(rows, ["run", ""]))])


def _dtypes(model: dict) -> str:
    """The dtype measured in, the one pruned in ([model] prune_dtype; runs before it had none), and why
    the dtype is not the profile's."""
    dtype, prune_dtype = model.get("dtype"), model.get("prune_dtype")
    pruned_in = f"pruned in {dtype if prune_dtype == 'same' else prune_dtype}" if prune_dtype else None
    return "; ".join(x for x in (dtype, pruned_in, model.get("dtype_note")) if x) or "-"


def _code_versions(run: Run, commits: list[str]) -> str:
    if len(commits) <= 1:
        return f"one: source {commits[0]}" if commits else "-"
    history = {h.get("source_digest"): h.get("commit") for h in run.meta.get("code_history", [])}
    note = " (results of other code kept by --reuse-results-from-other-code)" if run.meta.get("reuse_other_code") else ""
    return f"{len(commits)}{note}: " + ", ".join(f"source {d} (commit {history.get(d) or '?'})" for d in commits)


def _wall_time(started: str | None, finished: str | None) -> str:
    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except (TypeError, ValueError):
        return "-"
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def _resumed(run: Run) -> str:
    """An interrupted run's wall time includes the pause: give each segment's time until the last
    result it wrote (the work of an interrupted segment after that result was lost, not counted)."""
    meta = run.meta
    try:
        starts = [datetime.fromisoformat(t) for t in [meta["started"], *meta["resumed"]]]
        finished = datetime.fromisoformat(meta["finished"]) if meta.get("finished") else None
    except (KeyError, TypeError, ValueError):
        return ", ".join(meta.get("resumed") or [])
    ends = []
    for key in run.models:
        for name in MEASUREMENTS:
            m = run.measurement(key, name)
            if m is not None and m.provenance.get("started") and m.seconds is not None:
                begun = datetime.fromisoformat(m.provenance["started"])
                ends.append(begun.timestamp() + m.seconds)
    minutes = []
    for i, start in enumerate(starts):
        stop = starts[i + 1].timestamp() if i + 1 < len(starts) else None
        if stop is None and finished is not None:
            end = finished.timestamp()
        else:
            written = [e for e in ends if start.timestamp() <= e <= (stop or float("inf"))]
            end = max(written, default=start.timestamp())
        minutes.append((end - start.timestamp()) / 60)
    parts = [f"segment {i + 1} from {t.strftime('%H:%M:%S')}: {mins:.1f} min" for i, (t, mins) in enumerate(zip(starts, minutes))]
    times = "once" if len(starts) == 2 else f"{len(starts) - 1} times"
    return (f"{times}; " + "; ".join(parts) + f"; {sum(minutes):.1f} min in all, "
            "each interrupted segment counted to its last written result")


def _source_model(run: Run) -> str:
    return next((m.source["model_id"] for m in run.models.values() if m.source.get("model_id")), "-")


def synthetic_line(run: Run) -> list[str]:
    """The first screen's warning for a shaped stand-in: its figures are of speed and memory alone."""
    synthetic = run.synthetic
    if not synthetic:
        return []
    vocab = (synthetic.get("tokenizer") or {}).get("vocab_size")
    return [f"**{synthetic.get('note', 'synthetic weights')}**: seeded random weights at the shape of "
            f"`{synthetic.get('name', '?')}` ({synthetic.get('config_source', 'source not recorded')}), the embedded "
            f"tokenizer{f' cut to {vocab:,} tokens' if vocab else ''}; no accuracy or perplexity claim is judged.  "]


def at_conditions(run: Run, judge: Judge, claims: Claims) -> tuple[dict[str, bool], str]:
    """{model: at the paper's ratio band (or its own ratio)} and the band in words for the claims' table."""
    band = next((c.conditions for c in claims.claims if c.conditions.ratio), None)
    if band is None:
        return {}, "No claim states a ratio band."
    low, high = band.ratio
    at = {}
    for key, model in run.models.items():
        if key == DENSE:
            continue
        r = model.pruning_ratio
        own = judge.paper_ratio(key) if band.ratio_of_paper else None
        at[key] = r is not None and (low - 1e-9 <= r <= high + 1e-9 or (own is not None and abs(r - own) <= band.ratio_tolerance))
    keys = [k for k, yes in at.items() if yes]
    text = (f"At the paper's conditions ({low:.0%}–{high:.0%} of parameters removed, Table 1 / abstract): "
            + (", ".join(f"**{k}**" for k in keys) if keys else "**no model**") + ".")
    return at, text


def checks_section(figures: Figures) -> str:
    checks = run_checks(figures)
    rows = [[c.name, "ok" if c.ok else "**no**", c.detail] for c in checks]
    failed = sum(not c.ok for c in checks)
    summary = f"{len(checks) - failed} of {len(checks)} hold" + (f"; **{failed} do not**" if failed else "")
    return "\n".join(["## Checks of the figures", "",
                      details(f"What must hold whatever the model: {summary}",
                              "The same items for every model, identical weights measuring identically, a dense model "
                              "above chance on the benchmarks whose retention is judged.", "",
                              table(rows, ["check", "holds", "detail"]))])
