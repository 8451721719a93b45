"""The run's models and its bookkeeping in a report: each model with its target and warnings, the time
each measurement took, the code behind the numbers, LaCo's search trace, and what was not measured."""

from __future__ import annotations

from suites.evidence import DENSE, MEASUREMENTS, Run
from suites.markdown import num, ratio_cell, table


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
        rows.append([key, m.method, m.point or "-", layers, num(p.get("after") and p["after"] / 1e6, "{:.1f}M"),
                     _target(m.record), ratio_cell(run, key), f"`{m.weights[:12]}`" if m.weights else "-", ", ".join(twins)])
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


def time_section(run: Run) -> str:
    """Seconds per model and measurement, so the run's budget can be seen."""
    names = [n for n in MEASUREMENTS if any(run.measurement(k, n) for k in run.models)]
    rows, totals = [], dict.fromkeys(names, 0.0)
    for key in run.models:
        cells = [key]
        for n in names:
            m = run.measurement(key, n)
            sec = m.seconds if m is not None else None
            cells.append(num(sec, "{:.0f}"))
            totals[n] += sec or 0.0
        cells.append(num(sum(float(c) for c in cells[1:] if c != "-"), "{:.0f}"))
        rows.append(cells)
    rows.append(["**all**", *[f"{totals[n]:.0f}" for n in names], f"{sum(totals.values()):.0f}"])
    return "\n".join(["## Time per measurement", "",
                      "Wall seconds of each measurement (pruning time: the repeated timings; throughput: the model's share "
                      "of the interleaved phase, its engine start included). Pruning itself and model loading are not "
                      "listed.", "",
                      table(rows, ["model", *names, "total"]), *reused_note(run)])


def reused_note(run: Run) -> list[str]:
    """The figures this run took from the shared result cache, each with the run that measured it."""
    found = []
    for key, results in run.results.items():
        for name, m in results.items():
            if m.provenance.get("reused_from"):
                found.append(f"{key} {name} from {m.provenance['reused_from'].get('run_id')}")
            for part, p in (m.values.get("parts") or {}).items():
                if p.get("reused_from"):
                    found.append(f"{key} {name} {part} from {p['reused_from'].get('run_id')}")
                if p.get("items_reused"):
                    found.append(f"{key} {part}: {p['items_reused']} of {p['items_reused'] + p.get('items_scored', 0)} "
                                 f"items from {', '.join(p.get('items_reused_from') or ['?'])}")
    return ["", "Reused from the shared result cache (their seconds above are this run's, near 0): "
            + "; ".join(found) + "."] if found else []


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
            f"C={c.get('C')}, L={c.get('L')}, H={c.get('H')}, I={c.get('I')}, T={num(c.get('T'), '{:.4g}')}, "
            f"merge={c.get('merge')}; {record.get('n_layers_before')} → {record.get('n_layers_after')} layers; "
            f"search {num(record.get('search_seconds'), '{:.2f}')} s. "
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
