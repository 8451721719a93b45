"""The head of a report: the run at a glance, which models are at the paper's conditions, the verdicts
with the paper's figures beside ours, and the checks of the run's figures."""

from __future__ import annotations

from datetime import datetime

from suites.checks import run_checks
from suites.claims import Claims
from suites.evidence import DENSE, MEASUREMENTS, Run
from suites.figures import Figures
from suites.markdown import VERDICT_MARK, ratio_cell, table
from suites.outcomes import PASS, STATUSES, Verdict
from suites.verdicts import Judge


def gate_outcome(verdicts: list[Verdict]) -> str:
    gated = [v for v in verdicts if v.gated]
    if not gated:
        return "FAIL (no gated claim)"
    blocking = [v for v in gated if v.status != PASS]
    if not blocking:
        return "PASS"
    counts = {s: sum(v.status == s for v in blocking) for s in STATUSES if s != PASS}
    return "FAIL (" + ", ".join(f"{n} gated {s}" for s, n in counts.items() if n) + ")"


def header(run: Run, verdicts: list[Verdict]) -> str:
    meta, profile = run.meta, run.profile
    counts = " · ".join(f"{sum(v.status == s for v in verdicts)} {s}" for s in STATUSES)
    libs = meta.get("libraries") or {}
    device = meta.get("device") or {}
    spec = (profile.get("model") or {}).get("spec")
    commits = run.commits()
    rows = [
        ["profile", run.profile_name],
        ["model", " / ".join(dict.fromkeys(x for x in (spec, _source_model(run)) if x and x != "-")) or "-"],
        ["device", ", ".join(f"{k}={v}" for k, v in device.items()) or "-"],
        ["dtype", _dtypes(profile.get("model") or {})],
        ["started / finished", f"{meta.get('started') or '-'} / {meta.get('finished') or 'not finished'}"],
        ["wall time", _wall_time(meta.get("started"), meta.get("finished"))],
        *([["resumed", _resumed(run)]] if meta.get("resumed") else []),
        ["git commit", meta.get("git_commit") or "-"],
        ["code versions", _code_versions(run, commits)],
        ["libraries", ", ".join(f"{k} {v}" for k, v in libs.items()) or "-"],
        ["seed", meta.get("seed", "-")],
    ]
    return "\n".join([
        f"# laco-bench report: run `{run.id}`",
        "",
        f"**{counts}** of {len(verdicts)} verdicts. Release gate (`laco gate`): **{gate_outcome(verdicts)}**.",
        "",
        table(rows, ["run", ""]),
    ])


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
    for m in run.models.values():
        source = m.record.get("source") or {}
        if source.get("model_id"):
            return source["model_id"]
    return "-"


def conditions_section(run: Run, judge: Judge, claims: Claims) -> str:
    """Which models are at the paper's conditions (the 25-30% band, or the paper's own ratio)."""
    band = next((c.conditions for c in claims.claims if c.conditions.ratio), None)
    lines = ["## At the paper's conditions", ""]
    if band is None:
        return "\n".join(lines + ["No claim states a ratio band."])
    low, high = band.ratio
    rows = []
    for key, model in run.models.items():
        if key == DENSE:
            continue
        r = model.pruning_ratio
        own = judge.paper_ratio(key) if band.ratio_of_paper else None
        at = r is not None and (low - 1e-9 <= r <= high + 1e-9 or (own is not None and abs(r - own) <= band.ratio_tolerance))
        rows.append([key, model.method, model.point or "-", ratio_cell(run, key), "yes" if at else "no"])
    at_keys = [r[0] for r in rows if r[-1] == "yes"]
    summary = (f"At the paper's conditions ({low:.0%}–{high:.0%} of parameters removed, Table 1 / abstract): "
               + (", ".join(f"**{k}**" for k in at_keys) if at_keys else "**no model**") + ".")
    return "\n".join(lines + [summary, "", table(rows, ["model", "method", "ratio point", "pruned", "at conditions"])])


def verdict_section(verdicts: list[Verdict], claims: Claims) -> str:
    rows = []
    for v in verdicts:
        notes = [n for n in v.notes if n]
        for r in v.rows:
            if r.items_needed:
                notes.append("decides at about " + ", ".join(f"{t} {n}" for t, n in r.items_needed.items()) + " items")
        rows.append([f"`{v.claim.id}`", v.subject, v.paper, v.ours,
                     VERDICT_MARK[v.status] + (" (gated)" if v.gated else ""), "; ".join(notes)])
    legend = [[f"`{c.id}`", c.statement, c.source] for c in claims.claims]
    s = claims.statistics
    return "\n".join([
        "## Verdicts",
        "",
        f"Each claim judged on this run (`pytest suites --run` asserts the same verdicts), by where its "
        f"{s.confidence:.0%} interval lies: PASS wholly on the claim's side of the threshold, FAIL wholly on the "
        "other side, INCONCLUSIVE across it (with the items per task that would decide at the observed effect). "
        "Accuracy intervals come from a paired bootstrap over the items both models answered, resampled within "
        f"each task ({s.resamples} resamples, seed {s.seed}); perplexity pairs the windows; throughput pairs "
        "interleaved rounds; parameter memory is exact. *not measured* and *not at the claim's conditions* are "
        "never passes.",
        "",
        table(rows, ["claim", "model", "paper", "ours [95% interval]", "verdict", "note"]),
        "",
        "<details><summary>What each claim says, and where the paper says it</summary>",
        "",
        table(legend, ["claim", "statement", "source"]),
        "",
        "</details>",
    ])


def checks_section(figures: Figures) -> str:
    rows = [[c.name, "ok" if c.ok else "**no**", c.detail] for c in run_checks(figures)]
    return "\n".join(["## Checks of the figures", "",
                      "What must hold whatever the model: the same items for every model, identical weights measuring "
                      "identically, a dense model above chance on the benchmarks whose retention is judged.", "",
                      table(rows, ["check", "holds", "detail"])])
