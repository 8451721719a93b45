"""A run as a markdown report (GitHub pipe tables via tabulate) with PNG plots beside it.

Sections follow the paper: verdicts first, then tables shaped like its results tables
(per-benchmark scores with average and % of dense; perplexity; pruning time; memory and
tokens/s), then LaCo's search trace. Everything is read from the run and the verdicts; nothing
is measured or recomputed beyond averages and ratios. The output holds no clock time other than
what the run recorded, so the same run renders the same text.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from tabulate import tabulate

from laco.report.judge import (
    FAIL,
    NOT_MEASURED,
    PASS,
    Claims,
    NotMeasured,
    Verdict,
    average,
    judge_run,
    lm_eval_stderr,
    task_scores,
)
from laco.report.runs import DENSE, MEASUREMENTS, Run

VERDICT_MARK = {PASS: "PASS", FAIL: "**FAIL**", NOT_MEASURED: "not measured"}


def table(rows: Iterable[Iterable], headers: list[str], align: str | None = None) -> str:
    """A GitHub pipe table; '|' inside a cell is escaped so it cannot break the row."""
    cells = [[_cell(c) for c in row] for row in rows]
    return tabulate(cells, headers=headers, tablefmt="github", disable_numparse=True,
                    colalign=[align] * len(headers) if align else None)


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _pct(x: float | None, se: float | None = None) -> str:
    if x is None:
        return "-"
    return f"{100 * x:.1f} ±{100 * se:.1f}" if se is not None else f"{100 * x:.1f}"


def _ratio(model_record: dict) -> str:
    r = (model_record.get("parameters") or {}).get("pruning_ratio")
    return f"{r:.1%}" if r is not None else "-"


def _num(x, fmt: str = "{:.1f}") -> str:
    return "-" if x is None else fmt.format(x)


# --- sections -----------------------------------------------------------------------------------

def header(run: Run, verdicts: list[Verdict]) -> str:
    meta, profile = run.meta, run.meta.get("profile") or {}
    counts = {s: sum(v.status == s for v in verdicts) for s in (PASS, FAIL, NOT_MEASURED)}
    gated = [v for v in verdicts if v.gated]
    failed = sum(v.status == FAIL for v in gated)
    missing = sum(v.status == NOT_MEASURED for v in gated)
    gate = ("FAIL (no gated claim)" if not gated else "PASS" if not failed and not missing
            else f"FAIL ({failed} gated failed, {missing} gated not measured)")
    libs = meta.get("libraries") or {}
    device = meta.get("device") or {}
    spec = (profile.get("model") or {}).get("spec")  # the bench's profile: model = {spec, dtype, device, ...}
    rows = [
        ["profile", run.profile_name],
        ["model", " / ".join(dict.fromkeys(x for x in (spec, _source_model(run)) if x and x != "-"))
         or "-"],
        ["device", ", ".join(f"{k}={v}" for k, v in device.items()) or "-"],
        ["started / finished", f"{meta.get('started') or '-'} / {meta.get('finished') or 'not finished'}"],
        ["wall time", _wall_time(meta.get("started"), meta.get("finished"))],
        ["git commit", meta.get("git_commit") or "-"],
        ["libraries", ", ".join(f"{k} {v}" for k, v in libs.items()) or "-"],
        ["seed", meta.get("seed", "-")],
    ]
    return "\n".join([
        f"# laco-bench report: run `{run.id}`",
        "",
        f"**{counts[PASS]} PASS · {counts[FAIL]} FAIL · {counts[NOT_MEASURED]} not measured** "
        f"of {len(verdicts)} verdicts. Release gate (`laco gate`): **{gate}**.",
        "",
        table(rows, ["run", ""]),
    ])


def _wall_time(started: str | None, finished: str | None) -> str:
    from datetime import datetime

    try:
        seconds = (datetime.fromisoformat(finished) - datetime.fromisoformat(started)).total_seconds()
    except (TypeError, ValueError):
        return "-"
    return f"{seconds / 60:.1f} min ({seconds:.0f} s)"


def _source_model(run: Run) -> str:
    for m in run.models.values():
        source = m.record.get("source") or {}
        if source.get("model_id"):
            return source["model_id"]
    return "-"


def verdict_section(verdicts: list[Verdict], claims: Claims, profile: str) -> str:
    rows = [[f"`{v.claim.id}`", v.subject, v.paper, v.ours, VERDICT_MARK[v.status] + (" (gated)" if v.gated else ""),
             "; ".join(x for x in [v.noise, *_notes(v)] if x)] for v in verdicts]
    legend = [[f"`{c.id}`", c.statement, c.source] for c in claims.claims]
    return "\n".join([
        "## Verdicts",
        "",
        "Each claim of `suites/claims.toml`, judged on this run (`pytest suites --run` asserts the same "
        "verdicts). *not measured*: a measurement is missing, n/a or stale; it never counts as a pass. "
        "*within noise*: the accuracy difference is under "
        f"{claims.noise_k:g}·sqrt(se_a² + se_b²) of lm-eval's stderr (throughput: the min..max spreads overlap, "
        f"or the ratio is within ±{claims.throughput_floor(profile):.0%} of the threshold, the drift between engine starts "
        "measured for this profile).",
        "",
        table(rows, ["claim", "model", "paper", "ours", "verdict", "note"]),
        "",
        "<details><summary>What each claim says, and where the paper says it</summary>",
        "",
        table(legend, ["claim", "statement", "source"]),
        "",
        "</details>",
    ])


def _notes(v: Verdict) -> list[str]:
    return [r.note for r in v.rows if r.status != PASS and r.note]


def models_section(run: Run) -> str:
    rows = []
    for key, m in run.models.items():
        p = m.record.get("parameters") or {}
        layers = (f"{m.record['n_layers_before']} → {m.record['n_layers_after']}"
                  if "n_layers_after" in m.record else "-")
        rows.append([key, m.method, layers, _num(p.get("after") and p["after"] / 1e6, "{:.1f}M"), _ratio(m.record),
                     f"`{m.fingerprint[:12]}`" if m.fingerprint else "-"])
    lines = ["## Models", "", table(rows, ["model", "method", "layers", "parameters", "pruned", "fingerprint"])]
    warnings = [f"- **{key}**: {text}" for key, m in run.models.items() for text in pruner_warnings(m.record)]
    if warnings:
        lines += ["", "Warnings the pruners recorded (they qualify that model's figures):", "", *warnings]
    return "\n".join(lines)


def pruner_warnings(record: dict) -> list[str]:
    """A pruner states a known weakness of its own output as a `*_warning` field of its record."""
    return [str(value) for key, value in sorted(record.items()) if key.endswith("_warning") and value]


def _derived_mark(run: Run, key: str, task: str) -> str:
    """'*' where the stderr shown is the binomial one because lm-eval gave none."""
    return "" if lm_eval_stderr(run.ok(key, "accuracy").values["tasks"][task]) is not None else "*"


def accuracy_section(run: Run, claims: Claims) -> tuple[str, dict[str, dict[str, float]]]:
    """Per-benchmark scores, average and % of dense (the shape of the paper's main tables), and
    the retention per benchmark that the plot shows."""
    scores = {}
    for key in run.models:
        try:
            scores[key] = task_scores(run, key)
        except NotMeasured:
            continue
    if not scores:
        return "## Accuracy\n\nNo model has an accuracy result.", {}
    tasks = list(dict.fromkeys(t for s in scores.values() for t in s))
    dense = scores.get(DENSE)
    rows, retention, derived = [], {}, False
    for key, s in scores.items():
        avg = average(s) if all(t in s for t in tasks) else None
        of_dense = None
        if avg is not None and dense and all(t in dense for t in tasks):
            of_dense = avg.value / average(dense).value
        marks = {t: _derived_mark(run, key, t) for t in s}
        derived = derived or any(marks.values())
        row = [key, _ratio(run.models[key].record)] + [_pct(*s[t]) + marks[t] if t in s else "-" for t in tasks]
        rows.append(row + [_pct(avg.value, avg.stderr) if avg else "-", f"{of_dense:.1%}" if of_dense else "-"])
        if dense and key != DENSE:
            retention[key] = {t: s[t][0] / dense[t][0] for t in tasks if t in s and t in dense and dense[t][0]}
    acc = run.ok(next(iter(scores)), "accuracy")
    meta = acc.values.get("tasks", {})
    protocol = ", ".join(f"{t} {meta[t].get('metric', 'acc')} (n={meta[t].get('n', '?')})" for t in tasks if t in meta)
    lines = [
        "## Accuracy",
        "",
        f"Scores in % with lm-eval's stderr (lm-eval {acc.values.get('lm_eval_version', '?')}); "
        f"metric and items per task: {protocol}. Avg.: mean over the benchmarks above; "
        "% of dense: Avg. / dense Avg. (the paper's average and percentage columns)."
        + (" *: lm-eval gave no stderr (a group of one-item subtasks); shown is the binomial sqrt(p(1-p)/(n-1)) "
           "over its n items." if derived else ""),
        "",
        table(rows, ["model", "pruned", *tasks, "Avg.", "% of dense"]),
    ]
    not_available = {}
    for key in scores:
        not_available.update(run.ok(key, "accuracy").values.get("not_available") or {})
    if not_available:
        lines += ["", "Not measured (no lm-eval task): "
                  + "; ".join(f"{b} ({why})" for b, why in sorted(not_available.items())) + "."]
    lines += ["", paper_section(run, claims)]
    if retention:
        rrows = [[k] + [f"{r[t]:.1%}" if t in r else "-" for t in tasks] for k, r in retention.items()]
        lines += ["", "### Score kept per benchmark (% of dense)", "",
                  table(rrows, ["model", *tasks]), "", f"![score kept per benchmark]({run.id}/retention.png)"]
    return "\n".join(lines), retention


def paper_section(run: Run, claims: Claims) -> str:
    """The paper's figures for this run's model, where entered in suites/paper_figures.toml."""
    entry = (claims.paper.get("models") or {}).get(run.profile_name)
    if entry is None:
        return "The paper reports no figures for this model: nothing to compare with."
    methods = {k: v for k, v in entry.items() if isinstance(v, dict)}
    if not methods:
        return (f"Paper figures for {entry.get('paper_model', run.profile_name)}: **not entered** "
                "(`suites/paper_figures.toml` says why); only our figures are shown.")
    tasks = list(dict.fromkeys(t for v in methods.values() for t in (v.get("scores") or {})))
    rows = [[m, _num(v.get("ratio"), "{:.1%}")] + [_num((v.get("scores") or {}).get(t)) for t in tasks]
            + [_num(v.get("average")), _num(v.get("percent_of_dense"), "{:.1f}%"), v.get("source", "")]
            for m, v in methods.items()]
    return "\n".join([f"Paper figures for {entry.get('paper_model', run.profile_name)} (in %):", "",
                      table(rows, ["paper", "pruned", *tasks, "Avg.", "% of dense", "source"])])


def perplexity_section(run: Run) -> str:
    rows, protocol = [], ""
    for key, model in run.models.items():
        m = run.ok(key, "perplexity")
        if m is None:
            rows.append([key, _ratio(model.record), "-", "-", "-"])
            continue
        w = m.values.get("windows") or {}
        lm = m.values.get("lm_eval_wikitext") or {}
        protocol = f"{w.get('dataset', '?')}, {w.get('window', '?')}-token windows"
        rows.append([key, _ratio(model.record), _num(w.get("ppl"), "{:.2f}"), w.get("n_windows", "-"),
                     _num(lm.get("word_perplexity"), "{:.2f}")])
    return "\n".join(["## Perplexity", "", f"Lower is better. Protocol: {protocol or 'not measured'}.", "",
                      table(rows, ["model", "pruned", "PPL (windows)", "windows", "lm-eval wikitext word PPL"])])


def pruning_time_section(run: Run) -> str:
    times = {k: run.ok(k, "pruning_time").values.get("seconds") for k in run.models
             if k != DENSE and run.ok(k, "pruning_time")}
    laco = next((times[k] for k in run.keys_of(("laco",)) if k in times), None)
    rows = [[k, run.models[k].method, _ratio(run.models[k].record), _num(times.get(k), "{:.2f}"),
             f"x{times[k] / laco:.2f}" if k in times and laco else "-"] for k in run.models if k != DENSE]
    return "\n".join(["## Pruning time", "",
                      "The pruning step alone (no load, no save), as the paper times it; same machine, one run.", "",
                      table(rows, ["model", "method", "pruned", "seconds", "vs LaCo"])])


def efficiency_section(run: Run) -> str:
    rows, settings = [], {}
    for key, model in run.models.items():
        mem = run.ok(key, "memory")
        cells = [key, _ratio(model.record)]
        cells += ([_num(mem.values.get("param_mb")), _num(mem.values.get("peak_mb")), mem.values.get("peak_kind", "")]
                  if mem else ["-", "-", "-"])
        for engine in ("hf", "vllm"):
            m = run.measurement(key, f"throughput_{engine}")
            if m is not None and m.ok:
                settings[engine] = {k: m.values.get(k) for k in ("batch_size", "input_len", "output_len", "repeats")}
                cells.append(_spread(m.values.get("output_tokens_per_s")))
                cells.append(_num((m.values.get("total_tokens_per_s") or {}).get("median")))
            else:
                cells += ["n/a" if m is not None else "-", "-"]
        rows.append(cells)
    setting_text = "; ".join(f"{e}: " + ", ".join(f"{k}={v}" for k, v in s.items()) for e, s in settings.items())
    return "\n".join([
        "## Memory and throughput",
        "",
        "Memory in MB: parameters, and the peak of a fixed forward + generate workload (how it was measured: "
        "peak kind). Tokens/s: median output tokens/s (min..max over repeats) and median total tokens/s. "
        f"Settings: {setting_text or 'not measured'}. n/a: the engine could not load the model (reason below).",
        "",
        table(rows, ["model", "pruned", "param MB", "peak MB", "peak kind", "HF out tok/s", "HF total tok/s",
                     "vLLM out tok/s", "vLLM total tok/s"]),
    ])


def _spread(d: dict | None) -> str:
    if not d or d.get("median") is None:
        return "-"
    if d.get("min") is None or d.get("max") is None:
        return f"{d['median']:.1f}"
    return f"{d['median']:.1f} ({d['min']:.1f}..{d['max']:.1f})"


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


# --- the whole report ----------------------------------------------------------------------------

def render(run: Run, claims: Claims, verdicts: list[Verdict] | None = None) -> tuple[str, dict]:
    """The markdown of the report and what its plots need: {"retention": ..., "traces": ...}."""
    verdicts = judge_run(run, claims) if verdicts is None else verdicts
    accuracy, retention = accuracy_section(run, claims)
    trace, traces = trace_section(run)
    parts = [header(run, verdicts), verdict_section(verdicts, claims, run.profile_name), models_section(run), accuracy,
             perplexity_section(run), pruning_time_section(run), efficiency_section(run), trace, missing_section(run)]
    return "\n\n".join(parts) + "\n", {"retention": retention, "traces": traces}


def write_report(run: Run, claims: Claims, out_dir: str | Path = "reports") -> Path:
    """reports/<run-id>.md and reports/<run-id>/*.png, each put in place by a rename."""
    from laco.report.plots import retention_plot, similarity_plot

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
        (tmp / f"{run.id}.md").write_text(text, encoding="utf-8")
        final_images = out_dir / run.id
        if final_images.exists():
            shutil.rmtree(final_images)
        images.rename(final_images)
        (tmp / f"{run.id}.md").replace(out_dir / f"{run.id}.md")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / f"{run.id}.md"
