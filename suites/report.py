"""A run as a markdown report (GitHub pipe tables via tabulate) with PNG plots beside it.

Verdicts first, with their intervals and the paper's figure beside ours; then the checks of the run's
figures against their bounds; then tables shaped like the paper's (scores per benchmark, retention,
perplexity, pruning time, memory and tokens/s with FLOPs and the compute-bound ideal), the time each
measurement took, and LaCo's search trace. Everything is read from the run and the verdicts; nothing
is measured. The output holds no clock time other than what the run recorded, so the same run
renders the same text.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
from tabulate import tabulate

from suites import evidence as ev
from suites import statistics as st
from suites.checks import run_checks
from suites.claims import Claims
from suites.evidence import DENSE, MEASUREMENTS, NotMeasured, Run
from suites.verdicts import FAIL, INCONCLUSIVE, NOT_AT_CONDITIONS, NOT_MEASURED, PASS, STATUSES, Judge, Verdict

VERDICT_MARK = {PASS: "PASS", FAIL: "**FAIL**", INCONCLUSIVE: "*INCONCLUSIVE*", NOT_MEASURED: "not measured",
                NOT_AT_CONDITIONS: "not at the claim's conditions"}


def table(rows: Iterable[Iterable], headers: list[str], align: str | None = None) -> str:
    """A GitHub pipe table; '|' inside a cell is escaped so it cannot break the row."""
    cells = [[_cell(c) for c in row] for row in rows]
    return tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=[align] * len(headers) if align else None)


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _num(x, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


def _ratio(run: Run, key: str) -> str:
    r = run.models[key].pruning_ratio
    return "-" if key == DENSE else f"{r:.1%}" if r is not None else "-"


def gate_outcome(verdicts: list[Verdict]) -> str:
    gated = [v for v in verdicts if v.gated]
    if not gated:
        return "FAIL (no gated claim)"
    blocking = [v for v in gated if v.status != PASS]
    if not blocking:
        return "PASS"
    counts = {s: sum(v.status == s for v in blocking) for s in STATUSES if s != PASS}
    return "FAIL (" + ", ".join(f"{n} gated {s}" for s, n in counts.items() if n) + ")"


# --- sections -------------------------------------------------------------------------------------

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
        rows.append([key, model.method, model.point or "-", _ratio(run, key), "yes" if at else "no"])
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


def checks_section(run: Run, claims: Claims) -> str:
    s = claims.statistics
    checks = run_checks(run, s.resamples, s.seed)
    rows = [[c.name, "ok" if c.ok else "**no**", c.detail] for c in checks]
    return "\n".join(["## Checks of the figures", "",
                      "What must hold whatever the model: the same items for every model, identical weights measuring "
                      "identically, a dense model above chance on the benchmarks whose retention is judged.", "",
                      table(rows, ["check", "holds", "detail"])])


def models_section(run: Run) -> str:
    rows = []
    identical = {}
    for key, m in run.models.items():
        if m.weights:
            identical.setdefault(m.weights, []).append(key)
    for key, m in run.models.items():
        p = m.record.get("parameters") or {}
        layers = (f"{m.record['n_layers_before']} → {m.record['n_layers_after']}" if "n_layers_after" in m.record else "-")
        twins = [k for k in identical.get(m.weights, []) if k != key] if m.weights else []
        rows.append([key, m.method, m.point or "-", layers, _num(p.get("after") and p["after"] / 1e6, "{:.1f}M"),
                     _target(m.record), _ratio(run, key), f"`{m.weights[:12]}`" if m.weights else "-", ", ".join(twins)])
    lines = ["## Models", "", "Target: the ratio a method was asked for (a matched baseline: the ratio its LaCo model "
             "reached); where its granule (one layer, one channel) cannot hit it, the nearest it reaches is shown as pruned.",
             "", table(rows, ["model", "method", "ratio point", "layers", "parameters", "target", "pruned",
                              "weights sha256", "identical weights"])]
    warnings = [f"- **{key}**: {text}" for key, m in run.models.items() for text in pruner_warnings(m.record)]
    if warnings:
        lines += ["", "Warnings the pruners recorded (they qualify that model's figures):", "", *warnings]
    calib = [f"- **{key}**: {_calibration(m.record)}" for key, m in run.models.items() if m.record.get("calibration")]
    if calib:
        lines += ["", "Calibration text of each pruned model:", "", *dict.fromkeys(calib)]
    return "\n".join(lines)


def _target(record: dict) -> str:
    target = record.get("target") or {}
    ratio, layers = target.get("ratio"), target.get("layers")
    reached = (record.get("parameters") or {}).get("pruning_ratio")
    if ratio is None:
        return f"{layers} layers" if layers else "-"
    off = f" (nearest in its granule: {reached - ratio:+.1%})" if reached is not None and abs(reached - ratio) > 0.005 else ""
    return f"{ratio:.1%}{off}"


def _calibration(record: dict) -> str:
    c = record["calibration"]
    docs = c.get("documents")
    where = f"wikitext-2 test documents {docs} (not read by this run's perplexity)" if docs else c.get("file", "-")
    return f"{c.get('sentences', '?')} texts from {where}, sha256 {str(c.get('sha256', ''))[:12]}"


def pruner_warnings(record: dict) -> list[str]:
    """A pruner states a known weakness of its own output as a `*_warning` field of its record."""
    return [str(value) for key, value in sorted(record.items()) if key.endswith("_warning") and value]


def dense_reproduction_section(run: Run, claims: Claims) -> str:
    """Our dense scores beside the paper's Dense* row, with the protocol differences that separate them."""
    paper = claims.paper
    model, own = paper.model_of(run.profile_name)
    try:
        items = ev.task_items(run, DENSE)
    except NotMeasured as exc:
        return f"## Dense reproduction\n\nNot measured: {exc}."
    rows = []
    for task, t in items.items():
        found = paper.benchmark_of_task(task)
        column, bench = found if found else ("-", None)
        fig = paper.figure(1, column, model, "dense") if found else None
        official = paper.figure(1, column, model, "dense-official") if found else None
        rows.append([task, f"{t.metric} n={t.n}", f"{100 * t.score:.1f}", f"{100 * t.chance_level:.1f}", column,
                     _num(fig and fig.value, "{:.2f}"), _num(official and official.value, "{:.2f}"),
                     (bench.note if bench else "no column of the paper's Table 1")])
    other = "" if own else (f" The paper did not prune this run's model: the figures shown are {model}'s, "
                            "another model, for orientation only.")
    return "\n".join([
        "## Dense reproduction",
        "",
        f"Our dense scores (lm-eval, %) beside the paper's Dense\\* (the authors' reproduction) and Dense (OpenCompass "
        f"leaderboard) rows of Table 1 for {model}.{other} Protocol differences the transcription documents: the paper "
        "scores with OpenCompass, mostly in PPL mode (the option of lowest perplexity), where lm-eval reports acc or "
        "acc_norm; the paper's WSC is SuperGLUE WSC (104 items, lm-eval `wsc`), not `wsc273`; lm-eval's `race` scores "
        "one question per article (the last), OpenCompass every question. Every cross-harness difference is approximate.",
        "",
        table(rows, ["task", "metric", "ours", "chance", "paper column", "paper Dense*", "paper Dense", "protocol note"]),
    ])


def accuracy_section(run: Run, claims: Claims) -> tuple[str, dict[str, dict[str, float]]]:
    """Per-benchmark scores with chance, average and the two retentions with their paired intervals."""
    s = claims.statistics
    scores = {}
    for key in run.models:
        try:
            scores[key] = ev.task_items(run, key)
        except NotMeasured:
            continue
    if not scores:
        return "## Accuracy\n\nNo model has per-item accuracy results.", {}
    tasks = list(dict.fromkeys(t for items in scores.values() for t in items))
    dense = scores.get(DENSE)
    rows, retention = [], {}
    if dense:
        rows.append(["chance", "-", *[_num(100 * dense[t].chance_level) if t in dense else "-" for t in tasks],
                     _num(100 * float(np.mean([dense[t].chance_level for t in tasks if t in dense]))), "-", "-"])
    for key, items in scores.items():
        avg = float(np.mean([items[t].score for t in tasks])) if all(t in items for t in tasks) else None
        per, above = "-", "-"
        if dense and key != DENSE:
            try:
                intervals = retention_intervals(run, key, s, tasks)
                per, above = intervals["per"].fmt(".1f", 100), intervals["above_chance"].fmt(".1f", 100)
            except NotMeasured as exc:
                per = above = f"({exc})"
            retention[key] = {t: items[t].score / dense[t].score for t in tasks if t in items and t in dense
                              and dense[t].score}
        rows.append([key, _ratio(run, key), *[_num(100 * items[t].score) if t in items else "-" for t in tasks],
                     _num(avg and 100 * avg), per, above])
    first = next(iter(scores.values()))
    protocol = ", ".join(f"{t} {first[t].metric} (n={first[t].n})" for t in tasks if t in first)
    lines = [
        "## Accuracy",
        "",
        f"Scores in % (lm-eval; metric and items per task: {protocol}). Avg.: mean over the benchmarks. Per.: mean over "
        "benchmarks of pruned / dense, the paper's Table 2 definition. Above chance: (Avg. − chance) / (dense Avg. − "
        "chance). Both with their 95% paired-bootstrap interval.",
        "",
        table(rows, ["model", "pruned", *tasks, "Avg.", "Per. % [95%]", "above chance % [95%]"]),
    ]
    notes = {}
    for key in scores:
        notes.update(run.ok(key, "accuracy").values.get("notes") or {})
    if notes:
        lines += ["", "Notes on the tasks: " + "; ".join(f"{t}: {n}" for t, n in sorted(notes.items())) + "."]
    not_available = {}
    for key in scores:
        not_available.update(run.ok(key, "accuracy").values.get("not_available") or {})
    if not_available:
        lines += ["", "Not measured (no lm-eval task or no local data): "
                  + "; ".join(f"{b} ({why})" for b, why in sorted(not_available.items())) + "."]
    if retention:
        rrows = [[k] + [f"{r[t]:.1%}" if t in r else "-" for t in tasks] for k, r in retention.items()]
        lines += ["", "### Score kept per benchmark (% of dense)", "",
                  table(rrows, ["model", *tasks]), "", f"![score kept per benchmark]({run.id}/retention.png)"]
    return "\n".join(lines), retention


def retention_intervals(run: Run, key: str, s, tasks: list[str] | None = None) -> dict[str, st.Interval]:
    """A model's retention of the dense score, paired over items: the paper's Per. (mean over tasks of
    pruned / dense) and above chance ((avg - chance) / (dense avg - chance))."""
    paired = ev.paired_items(run, [key, DENSE], tasks)

    def per(m):
        return np.mean([st.safe_ratio(m[t][key], m[t][DENSE]) for t in sorted(m)], axis=0)

    def above(m):
        chance = st.task_average(m, "chance")
        return st.safe_ratio(st.task_average(m, key) - chance, st.task_average(m, DENSE) - chance)

    return {"per": st.bootstrap_tasks(paired, per, s.resamples, s.seed),
            "above_chance": st.bootstrap_tasks(paired, above, s.resamples, s.seed), "tasks": len(paired)}


def ppl_ratio(run: Run, key: str, other: str, s) -> st.Interval:
    a, b, tokens = ev.paired_windows(run, key, other)
    return st.perplexity_ratio(a, b, tokens, s.resamples, s.seed)


def perplexity_section(run: Run, claims: Claims) -> str:
    s = claims.statistics
    rows, protocol = [], ""
    for key in run.models:
        m = run.ok(key, "perplexity")
        if m is None:
            rows.append([key, _ratio(run, key), "-", "-", "-", run.missing_reason(key, "perplexity")])
            continue
        w = m.values.get("windows") or {}
        lm = m.values.get("lm_eval_wikitext") or {}
        protocol = f"{w.get('dataset', '?')}, {w.get('window', '?')}-token windows, {w.get('n_windows', '?')} windows"
        vs = "-"
        if key != DENSE:
            try:
                vs = "×" + ppl_ratio(run, key, DENSE, s).fmt(".3g")
            except NotMeasured as exc:
                vs = str(exc)
        rows.append([key, _ratio(run, key), _num(w.get("ppl"), "{:.2f}"), vs, _num(lm.get("word_perplexity"), "{:.2f}"), ""])
    return "\n".join(["## Perplexity", "", f"Lower is better. Protocol: {protocol or 'not measured'}; the ratio to dense "
                      "pairs the windows (95% bootstrap interval over windows).", "",
                      table(rows, ["model", "pruned", "PPL (windows)", "vs dense [95%]", "lm-eval wikitext word PPL", "note"])])


ABLATION_TABLES = (10, 11, 12, 13, 15, 16, 17, 18)


def series_of(run: Run) -> dict[str, str]:
    """The curve each pruned model belongs to: its method, or its label where one ratio point holds two
    models of the same method (e.g. LLM-Pruner and its uniform variant)."""
    out = {}
    for key, m in run.models.items():
        if key == DENSE:
            continue
        twins = [k for k, o in run.models.items() if k != key and o.method == m.method and o.point == m.point]
        out[key] = m.method if not twins else key
    return out


def ratio_section(run: Run, claims: Claims) -> tuple[str, dict, dict]:
    """Table 7 of the paper, for this run: every method at every ratio point, with paired intervals,
    and the curves the plot draws. Empty when the run has a single ratio point."""
    s = claims.statistics
    points = {m.point for k, m in run.models.items() if k != DENSE and m.point and not _is_ablation(run, k)}
    if len(points) < 2:
        return "", {}, {}
    series, rows, curves = series_of(run), [], {}
    ordered = sorted((k for k in series if not _is_ablation(run, k)),
                     key=lambda k: (run.models[k].pruning_ratio or 0, series[k]))
    for key in ordered:
        model = run.models[key]
        entry = {"ratio": model.pruning_ratio or 0.0}
        cells = [model.point, series[key], key, _ratio(run, key)]
        try:
            r = retention_intervals(run, key, s)
            entry["retention"] = r["above_chance"]
            avg = float(np.mean([t.score for t in ev.task_items(run, key).values()]))
            cells += [_num(100 * avg), r["per"].fmt(".1f", 100), r["above_chance"].fmt(".1f", 100)]
        except NotMeasured:
            cells += ["-", "-", "-"]
        try:
            entry["ppl"] = ppl_ratio(run, key, DENSE, s)
            cells.append("×" + entry["ppl"].fmt(".3g"))
        except NotMeasured:
            cells.append("-")
        rows.append(cells)
        curves.setdefault(series[key], []).append(entry)
    paper_points, paper_rows = {}, []
    for model in ("Llama2-7B", "Llama2-13B"):
        printed = claims.paper.rows(7, model)
        dense = next((r for r in printed if r.ratio == 0), None)
        if dense is None:
            continue
        for r in printed:
            if r.ratio:
                retained = r.values["Avg."] / dense.values["Avg."]
                paper_points.setdefault(model, []).append((r.ratio, retained))
                paper_rows.append([model, f"{r.ratio:.1%}", r.layers, f"{r.values['Avg.']:.2f}", f"{retained:.1%}",
                                   r.note])
    text = "\n".join([
        "## Retention against the pruning ratio",
        "",
        "The shape of the paper's Table 7: each method at each ratio point of this run. Per.: mean over benchmarks of "
        "pruned / dense; above chance: (avg − chance) / (dense avg − chance); PPL: perplexity / dense perplexity on the "
        "same windows. Every figure with its 95% paired-bootstrap interval.",
        "",
        table(rows, ["ratio point", "method", "model", "pruned", "Avg.", "Per. % [95%]", "above chance % [95%]",
                     "PPL vs dense [95%]"]),
        "",
        "The paper's Table 7 (LaCo on Llama2-7B and 13B, OpenCompass, Avg. over its 14 benchmarks; another model and "
        "another harness, not chance-normalised):",
        "",
        table(paper_rows, ["paper model", "pruned", "layers", "Avg.", "Avg. / dense Avg.", "note"]),
        "",
        f"![retention and perplexity against the pruning ratio]({run.id}/ratio.png)",
    ])
    return text, curves, paper_points


def _is_ablation(run: Run, key: str) -> bool:
    ref = _paper_ref(run, key)
    return bool(ref) and ref.get("table") in ABLATION_TABLES


def _paper_ref(run: Run, key: str) -> dict | None:
    for m in run.profile.get("methods") or []:
        if m.get("label") == key:
            return m.get("paper")
    return None


def ablation_section(run: Run, claims: Claims) -> str:
    """Appendix B of the paper, for this run: one table per ablation, our rows beside the paper's, each
    against the run's reference LaCo model (the row standing for the paper's Table 1 result)."""
    s = claims.statistics
    by_table: dict[int, list[str]] = {}
    for key in run.models:
        ref = _paper_ref(run, key)
        if ref and ref.get("table") in ABLATION_TABLES:
            by_table.setdefault(ref["table"], []).append(key)
    if not by_table:
        return ""
    reference = next((k for k in run.models if (_paper_ref(run, k) or {}).get("setting") == "Table 1"), None)
    lines = ["## Ablations (the paper's Appendix B)", "",
             "Each ablation changes one setting of LaCo. Ours: accuracy on this run's benchmarks and perplexity, the "
             "difference to the reference model with its 95% paired interval (the same items, the same windows); "
             f"reference: **{reference or 'none'}**. Paper: Llama2-7B at 27%, OpenCompass scores (BoolQ, PIQA, HeSw), "
             "another model and another harness."]
    for number in sorted(by_table):
        table_def = claims.paper.table(number)
        members = [k for k in by_table[number] if k != reference]
        rows = []
        for key in ([reference] if reference else []) + members:
            ref = _paper_ref(run, key) or {}
            is_reference = key == reference
            setting = "reference (the paper's Table 1 row)" if is_reference else ref.get("setting") or ref.get("method")
            cells = [setting, key, _ratio(run, key)] + _against_reference(run, key, reference, s)
            if is_reference:
                prow = next(iter(claims.paper.rows(number, "Llama2-7B", "laco")), None)
            else:
                prow = next(iter(claims.paper.rows(number, "Llama2-7B", ref.get("method") or None,
                                                    ref.get("setting") or None)), None)
            cells += [" / ".join(f"{prow.values[c]:g}" for c in ("BoolQ", "PIQA", "HeSw") if c in prow.values) if prow
                      else "-", f"{prow.ratio:.1%}" if prow and prow.ratio else "-"]
            rows.append(cells)
        lines += ["", f"### Table {number}: {table_def.title if table_def else ''}", "",
                  table(rows, ["setting", "model", "pruned", "Avg.", "Avg. − reference [95%]", "PPL",
                               "PPL vs reference [95%]", "paper BoolQ / PIQA / HeSw", "paper ratio"])]
        if table_def and table_def.note:
            lines += ["", f"Paper note: {table_def.note}"]
    return "\n".join(lines)


def _against_reference(run: Run, key: str, reference: str | None, s) -> list[str]:
    cells = []
    try:
        items = ev.task_items(run, key)
        cells.append(_num(100 * float(np.mean([t.score for t in items.values()]))))
    except NotMeasured:
        cells.append("-")
    if reference and key != reference:
        try:
            paired = ev.paired_items(run, [key, reference])
            cells.append(st.bootstrap_tasks(paired, lambda m: st.task_average(m, key) - st.task_average(m, reference),
                                            s.resamples, s.seed).fmt("+.1f", 100) + " pt")
        except NotMeasured as exc:
            cells.append(str(exc))
    else:
        cells.append("reference" if key == reference else "-")
    w = run.ok(key, "perplexity")
    cells.append(_num(w and (w.values.get("windows") or {}).get("ppl"), "{:.2f}"))
    if reference and key != reference:
        try:
            cells.append("×" + ppl_ratio(run, key, reference, s).fmt(".3g"))
        except NotMeasured as exc:
            cells.append(str(exc))
    else:
        cells.append("-")
    return cells


def pruning_time_section(run: Run) -> str:
    rows = []
    for key in run.models:
        if key == DENSE:
            continue
        try:
            seconds = ev.pruning_seconds(run, key)
        except NotMeasured as exc:
            rows.append([key, run.models[key].method, _ratio(run, key), "-", "-", str(exc)])
            continue
        rows.append([key, run.models[key].method, _ratio(run, key), f"{np.median(seconds):.2f}",
                     f"{min(seconds):.2f}–{max(seconds):.2f}", f"{len(seconds)} timings"])
    return "\n".join(["## Pruning time", "",
                      "The pruning step alone (no load, no save), as the paper's Table 4 times it; median and range of "
                      "repeated timings on this machine. LaCo in target mode: the final search at the T the threshold "
                      "search chose.", "",
                      table(rows, ["model", "method", "pruned", "median s", "range s", "note"])])


def efficiency_section(run: Run, claims: Claims) -> str:
    s = claims.statistics
    rows, settings = [], {}
    for key in run.models:
        f = _flops(run, key)
        mem = run.ok(key, "memory")
        ideal, bound = ev.speedup_bounds(run, key, DENSE, "decode_tokens_per_s")
        cells = [key, _ratio(run, key), _num(f and f.get("parameters") and f["parameters"] / 1e6, "{:.1f}M"),
                 _num(f and f.get("layers"), "{}"),
                 _num(f and f.get("decode_flops_per_token") and f["decode_flops_per_token"] / 1e6, "{:.1f}"),
                 _num(ideal, "×{:.3f}") if key != DENSE else "-",
                 _num(bound, "×{:.3f}") if key != DENSE else "-",
                 _num(mem and mem.values.get("param_mb")), _num(mem and mem.values.get("peak_mb"))]
        for engine in ("hf", "vllm"):
            try:
                r = ev.rounds(run, key, engine)
            except NotMeasured:
                m = run.measurement(key, f"throughput_{engine}")
                cells += ["n/a" if m is not None else "-", "-", "-"]
                continue
            settings[engine] = {k: r.get(k) for k in ("batch_size", "input_len", "output_len", "rounds", "warmup",
                                                      "resident")}
            speedup = "-"
            if key != DENSE:
                try:
                    a, b = ev.paired_rounds(run, key, DENSE, engine, "decode_tokens_per_s")
                    interval = st.round_ratio(a, b, s.resamples, s.seed)
                    speedup = "×" + interval.fmt(".3f")
                    if bound is not None and interval.low > bound:
                        speedup += " **implausible: noise**"
                except NotMeasured:
                    pass
            cells += [_spread(r.get("prefill_tokens_per_s")), _spread(r.get("decode_tokens_per_s")), speedup]
        rows.append(cells)
    setting_text = "; ".join(f"{e}: " + ", ".join(f"{k}={v}" for k, v in x.items()) for e, x in settings.items())
    return "\n".join([
        "## Compute, memory and throughput",
        "",
        "FLOPs per decoded token (at the workload's context lengths, counted by torch's FlopCounterMode) and the "
        "compute-bound ideal speed-up over dense (dense FLOPs / model FLOPs); the ceiling is the larger of that and the "
        "layer ratio (a decode step is per-layer overhead plus FLOP-proportional work, so its speed-up lies between the "
        "two). Memory in MB: parameters, and the peak of "
        "a fixed forward + generate workload. Throughput from interleaved rounds (every model timed in each round, "
        "dense first): prefill tokens/s (input tokens over the time to the first token) and decode tokens/s (the "
        "tokens after the first over the rest of the time), median (min..max), and the decode speed-up over dense "
        "with its 95% interval over rounds. A speed-up whose whole interval lies above the ceiling is flagged "
        f"*implausible: noise*. Settings: {setting_text or 'not measured'}.",
        "",
        table(rows, ["model", "pruned", "params", "layers", "decode MFLOPs/token", "ideal speed-up", "ceiling",
                     "param MB", "peak MB",
                     "HF prefill tok/s", "HF decode tok/s", "HF decode vs dense [95%]",
                     "vLLM prefill tok/s", "vLLM decode tok/s", "vLLM decode vs dense [95%]"]),
    ])


def _flops(run: Run, key: str) -> dict | None:
    try:
        return ev.flops(run, key)
    except NotMeasured:
        return None


def _spread(d: dict | None) -> str:
    if not d or d.get("median") is None:
        return "-"
    if d.get("min") is None or d.get("max") is None:
        return f"{d['median']:.1f}"
    return f"{d['median']:.1f} ({d['min']:.1f}..{d['max']:.1f})"


def time_section(run: Run) -> str:
    """Seconds per model and measurement, so the run's budget can be seen."""
    names = [n for n in MEASUREMENTS if any(run.measurement(k, n) for k in run.models)]
    rows, totals = [], dict.fromkeys(names, 0.0)
    for key in run.models:
        cells = [key]
        for n in names:
            m = run.measurement(key, n)
            sec = m.seconds if m is not None else None
            cells.append(_num(sec, "{:.0f}"))
            totals[n] += sec or 0.0
        cells.append(_num(sum(float(c) for c in cells[1:] if c != "-"), "{:.0f}"))
        rows.append(cells)
    rows.append(["**all**", *[f"{totals[n]:.0f}" for n in names], f"{sum(totals.values()):.0f}"])
    return "\n".join(["## Time per measurement", "",
                      "Wall seconds of each measurement (pruning time: the repeated timings; throughput: the model's share "
                      "of the interleaved phase, its engine start included). Pruning itself and model loading are not "
                      "listed.", "",
                      table(rows, ["model", *names, "total"])])


def code_section(run: Run) -> str:
    """Which code measured each number, shown only when more than one version contributed."""
    commits = run.commits()
    if len(commits) <= 1:
        return ""
    history = {h.get("source_digest"): h for h in run.meta.get("code_history", [])}
    latest = (run.meta.get("code") or {}).get("source_digest")
    rows = []
    for key in run.models:
        for name in MEASUREMENTS:
            m = run.measurement(key, name)
            if m is None:
                continue
            digest = (m.code or {}).get("source_digest")
            commit = (m.code or {}).get("commit") or (history.get(digest) or {}).get("commit") or "?"
            rows.append([key, name, f"`{digest}`", commit, "" if digest == latest else "**other code**"])
    note = (" Results of other code were kept on purpose (`laco bench --reuse-results-from-other-code`)."
            if run.meta.get("reuse_other_code") else "")
    return "\n".join(["## Code behind the numbers", "",
                      f"{len(commits)} versions of the measuring code (laco/ and bench/ source digests) wrote into this "
                      f"run; the latest is `{latest}`.{note}", "",
                      table(rows, ["model", "measurement", "source digest", "commit", ""])])


def trace_section(run: Run) -> tuple[str, dict[str, dict]]:
    traces = {k: run.models[k].record for k in run.keys_of(("laco",)) if run.models[k].record.get("steps")}
    if not traces:
        return "## LaCo search trace\n\nNo LaCo model with a search trace in this run.", {}
    lines = ["## LaCo search trace", ""]
    for key, record in traces.items():
        c = record.get("config") or {}
        lines += [
            f"### {key}",
            "",
            f"C={c.get('C')}, L={c.get('L')}, H={c.get('H')}, I={c.get('I')}, T={_num(c.get('T'), '{:.4g}')}, "
            f"merge={c.get('merge')}; {record.get('n_layers_before')} → {record.get('n_layers_after')} layers; "
            f"search {_num(record.get('search_seconds'), '{:.2f}')} s. "
            "Each step tries to collapse layers l+1..l+K into the base layer l.",
            "",
            table([[i + 1, s["pointer"], s["k"], " ".join(map(str, s.get("layers", []))), f"{s['similarity']:.4f}",
                    "yes" if s["accepted"] else "no", s.get("n_layers", "")] for i, s in enumerate(record["steps"])],
                  ["step", "pointer l", "K", "layers collapsed", "similarity", "accepted", "layers after"]),
            "",
        ]
    lines.append(f"![LaCo search similarity]({run.id}/similarity.png)")
    return "\n".join(lines), traces


def missing_section(run: Run) -> str:
    rows = []
    for key in run.models:
        for name in MEASUREMENTS:
            if name == "pruning_time" and key == DENSE:
                continue
            if run.ok(key, name) is None:
                rows.append([key, name, run.missing_reason(key, name)])
    if not rows:
        return "## Not measured\n\nEvery measurement of every model finished."
    return "\n".join(["## Not measured", "", table(rows, ["model", "measurement", "why"])])


# --- the whole report -------------------------------------------------------------------------------

def render(run: Run, claims: Claims, verdicts: list[Verdict] | None = None) -> tuple[str, dict]:
    """The markdown of the report and what its plots need: {"retention": ..., "traces": ...}."""
    judge = Judge(run, claims)
    verdicts = judge.all() if verdicts is None else verdicts
    accuracy, retention = accuracy_section(run, claims)
    ratios, curves, paper_points = ratio_section(run, claims)
    trace, traces = trace_section(run)
    parts = [header(run, verdicts), conditions_section(run, judge, claims), verdict_section(verdicts, claims),
             checks_section(run, claims), models_section(run), dense_reproduction_section(run, claims), accuracy,
             ratios, ablation_section(run, claims), perplexity_section(run, claims), pruning_time_section(run),
             efficiency_section(run, claims), time_section(run), code_section(run), trace, missing_section(run)]
    plots = {"retention": retention, "traces": traces, "curves": curves, "paper_points": paper_points}
    return "\n\n".join(p for p in parts if p) + "\n", plots


def write_report(run: Run, claims: Claims, out_dir: str | Path = "reports") -> Path:
    """reports/<run-id>.md and reports/<run-id>/*.png, each put in place by a rename."""
    from suites.plots import ratio_curve_plot, retention_plot, similarity_plot

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    text, plots = render(run, claims)
    tmp = Path(tempfile.mkdtemp(prefix=f".{run.id}.tmp-", dir=out_dir))
    try:
        images = tmp / run.id
        images.mkdir()
        if plots["retention"]:
            retention_plot(plots["retention"], images / "retention.png")
        if plots["traces"]:
            similarity_plot(plots["traces"], images / "similarity.png")
        if plots["curves"]:
            ratio_curve_plot(plots["curves"], plots["paper_points"], images / "ratio.png")
        (tmp / f"{run.id}.md").write_text(text, encoding="utf-8")
        final_images = out_dir / run.id
        if final_images.exists():
            shutil.rmtree(final_images)
        images.rename(final_images)
        (tmp / f"{run.id}.md").replace(out_dir / f"{run.id}.md")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / f"{run.id}.md"
