"""The run's models and its bookkeeping in a report: each model with its target and warnings, the time
each measurement took, the code behind the numbers, LaCo's search trace, and what was not measured
(by the profile's design, or because measuring failed)."""

from __future__ import annotations

from suites.evidence import DENSE, MEASUREMENTS, Run
from suites.gate import planned
from suites.markdown import compact_table, details, num, table
from suites.report.sweeps import flagged_ratio

TARGET_SLACK = 0.005  # a reached ratio this close to its target is on target


def models_section(run: Run, at_conditions: dict[str, bool], mismatches: dict[str, str]) -> str:
    identical: dict[str, list[str]] = {}
    for key, m in run.models.items():
        if m.weights:
            identical.setdefault(m.weights, []).append(key)
    rows = []
    for key, m in run.models.items():
        p = m.record.get("parameters") or {}
        layers = (f"{m.record['n_layers_before']} → {m.record['n_layers_after']}" if "n_layers_after" in m.record else "-")
        twins = [k for k in identical.get(m.weights, []) if k != key] if m.weights else []
        at = "-" if key == DENSE else "yes" if at_conditions.get(key) else "no"
        rows.append([key, m.method, m.point or "-", layers, num(p.get("after") and p["after"] / 1e6, "{:.1f}M"),
                     target_text(m.record), flagged_ratio(run, key, mismatches), at,
                     f"`{m.weights[:12]}`" if m.weights else "-", ", ".join(twins)])
    lines = ["Target: the ratio a method was asked for (a matched baseline: the ratio its LaCo model reached); where "
             f"the reached ratio is more than {TARGET_SLACK:.1%} off, the difference is shown, and for a model pruned by "
             "whole layers whether a nearer layer count existed. ⚠: removed more than the tolerance away from the other "
             "models of its ratio point.", "",
             table(rows, ["model", "method", "ratio point", "layers", "parameters", "target", "pruned", "at conditions",
                          "weights sha256", "identical weights"])]
    lines += [f"- ⚠ {why}" for why in mismatches.values()]
    warnings = [f"- **{key}**: {text}" for key, m in run.models.items() for text in pruner_warnings(m.record)]
    if warnings:
        lines += ["", "Warnings the pruners recorded (they qualify that model's figures):", "", *warnings]
    calibration: dict[str, list[str]] = {}
    for key, m in run.models.items():
        if m.record.get("calibration"):
            calibration.setdefault(_calibration(m.record), []).append(key)
    if calibration:
        lines += ["", "Calibration text of the pruned models:", "",
                  *[f"- {text}: {', '.join(keys)}" for text, keys in calibration.items()]]
    return "\n".join(["## Models", "", details(f"{len(run.models)} models: method, ratio point, layers, target, "
                                                "whether at the paper's conditions, weights", *lines)])


def target_text(record: dict) -> str:
    """The target ratio, and how far the reached ratio is from it. For a model pruned by whole layers
    (each layer the same size), whether another layer count lay nearer the target."""
    target = record.get("target") or {}
    ratio, layers = target.get("ratio"), target.get("layers")
    p = record.get("parameters") or {}
    reached = p.get("pruning_ratio")
    if ratio is None:
        return f"{layers} layers" if layers else "-"
    if reached is None or abs(reached - ratio) <= TARGET_SLACK:
        return f"{ratio:.1%}"
    text = f"{ratio:.1%} (reached {100 * (reached - ratio):+.1f} pt"
    removed = (record.get("n_layers_before") or 0) - (record.get("n_layers_after") or 0)
    if removed > 0 and p.get("before") and p.get("after") is not None:
        per_layer = (p["before"] - p["after"]) / removed
        nearest = round(ratio * p["before"] / per_layer)
        if nearest != removed and abs(nearest * per_layer / p["before"] - ratio) < abs(reached - ratio):
            text += f"; {nearest} layers, {nearest * per_layer / p['before']:.1%}, lay nearer"
        else:
            text += "; the nearest layer count"
    return text + ")"


def _calibration(record: dict) -> str:
    c = record["calibration"]
    docs = c.get("documents")
    where = (f"wikitext-2 test documents {_ranges(docs)} (not read by this run's perplexity)" if docs
             else c.get("file", "-"))
    return f"{c.get('sentences', '?')} texts from {where}, sha256 {str(c.get('sha256', ''))[:12]}"


def _ranges(docs) -> str:
    """[4, 5, 6, 9] -> '4–6, 9' (the documents a calibration drew from, in a few characters)."""
    if not isinstance(docs, list) or not all(isinstance(d, int) for d in docs):
        return str(docs)
    spans: list[list[int]] = []
    for d in sorted(docs):
        if spans and d == spans[-1][1] + 1:
            spans[-1][1] = d
        else:
            spans.append([d, d])
    return ", ".join(f"{a}–{b}" if b > a else f"{a}" for a, b in spans)


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
    total = sum(totals.values())
    return "\n".join(["## Time per measurement", "",
                      details(f"{total / 60:.1f} min of measurements in all, per model and measurement",
                              "Wall seconds of each measurement (pruning time: the repeated timings; throughput: the "
                              "model's share of the interleaved phase, its engine start included). Pruning itself and "
                              "model loading are not listed.", "",
                              table(rows, ["model", *names, "total"])), *reused_note(run)])


def reused_note(run: Run) -> list[str]:
    """The figures this run took from the shared result cache, each with the run that measured it."""
    found = []
    for key, results in run.results.items():
        for name, m in results.items():
            if m.provenance.get("reused_from"):
                found.append(f"{key} {name} from {m.provenance['reused_from'].get('run_id')}")
            for part, p in (m.values.get("parts") or {}).items():
                if p.get("reused_from"):
                    found.append(f"{key} {name} {part}{taken_share(m.values.get(part))} from {p['reused_from'].get('run_id')}")
                if p.get("items_reused"):
                    found.append(f"{key} {part}: {p['items_reused']} of {p['items_reused'] + p.get('items_scored', 0)} "
                                 f"items from {', '.join(p.get('items_reused_from') or ['?'])}")
    return ["", "Reused from the shared result cache (their seconds above are this run's, near 0): "
            + "; ".join(found) + "."] if found else []


def taken_share(values) -> str:
    """" (the first N of M)" where a part took the first N windows of a cached run of M."""
    if isinstance(values, dict) and values.get("first_of"):
        return f" (the first {values['n_windows']} of {values['first_of']})"
    return ""


def code_section(run: Run) -> str:
    """Which code measured the results, one row per version, shown only when more than one contributed."""
    commits = run.commits()
    if len(commits) <= 1:
        return ""
    history = {h.get("source_digest"): h for h in run.meta.get("code_history", [])}
    latest = (run.meta.get("code") or {}).get("source_digest")
    written: dict[str, list[str]] = {}
    commit_of: dict[str, str] = {}
    for key in run.models:
        for name in MEASUREMENTS:
            m = run.measurement(key, name)
            if m is not None:
                digest = (m.code or {}).get("source_digest")
                written.setdefault(digest, []).append(f"{key} {name}")
                commit_of[digest] = (m.code or {}).get("commit") or (history.get(digest) or {}).get("commit") or "?"
    rows = [[f"`{d}`", commit_of[d], len(results), "" if d == latest else "**other code**",
             ", ".join(results) if d != latest else "every other result"] for d, results in written.items()]
    note = (" Results of other code were kept on purpose (`laco bench --reuse-results-from-other-code`)."
            if run.meta.get("reuse_other_code") else "")
    return "\n".join(["## Code behind the numbers", "",
                      f"{len(commits)} versions of the measuring code (laco/ and bench/ source digests) wrote into this "
                      f"run; the latest is `{latest}`.{note}", "",
                      details("Which version wrote which results",
                              table(rows, ["source digest", "commit", "results", "", "which"]))])


def trace_section(run: Run) -> tuple[str, dict[str, dict]]:
    """Every LaCo model's search in one row, each step as `l+K similarity` with ✓ accepted or ✗ rejected."""
    traces = {k: run.models[k].record for k in run.keys_of(("laco",)) if run.models[k].record.get("steps")}
    if not traces:
        return "## LaCo search trace\n\nNo LaCo model with a search trace in this run.", {}
    rows = []
    for key, record in traces.items():
        c = record.get("config") or {}
        steps = " · ".join(f"{s['pointer']}+{s['k']} {s['similarity']:.2f} {'✓' if s['accepted'] else '✗'}"
                           for s in record["steps"])
        rows.append([key, f"C={c.get('C')}, L={c.get('L')}, H={c.get('H')}, I={c.get('I')}, T={num(c.get('T'), '{:.4g}')}, "
                     f"merge={c.get('merge')}", f"{record.get('n_layers_before')} → {record.get('n_layers_after')}",
                     num(record.get("search_seconds"), "{:.2f}"), steps])
    body = ["Each step tries to collapse layers l+1..l+K into the base layer l: `l+K similarity` to dense, ✓ accepted, "
            "✗ rejected (below T). The plot below draws the same steps.", "",
            table(rows, ["model", "settings", "layers", "search s", "steps"])]
    return "\n".join(["## LaCo search trace", "", details(f"{len(traces)} LaCo searches, step by step", *body), "",
                      f"![LaCo search similarity]({run.id}/similarity.png)"]), traces


def not_reached(run: Run) -> list[str]:
    """The profile's method entries with no model in an unfinished run (stopped before pruning them)."""
    if run.meta.get("finished"):
        return []
    labels = [m.get("label") or m.get("name") for m in run.profile.get("methods") or []]
    return [label for label in labels if label and label not in run.models]


def missing_section(run: Run) -> str:
    """What has no result: the measurements the profile skips on purpose in one line each, then every
    failed, n/a, stale or missing result the profile asked for."""
    skipped: dict[str, list[str]] = {}
    rows = []
    for key in run.models:
        for name in MEASUREMENTS:
            if run.ok(key, name) is not None or (name == "pruning_time" and key == DENSE):
                continue
            if not planned(run, key, name):  # an n/a the design made (e.g. not among vllm.models) included
                skipped.setdefault(name, []).append(key)
            else:
                rows.append([key, name, run.missing_reason(key, name)])
    every = len(run.models)
    design = [f"- {name}: {'every model' if len(keys) >= every - (name == 'pruning_time') else ', '.join(keys)}"
              for name, keys in skipped.items()]
    lines = ["## Not measured", ""]
    if design:
        lines += [f"Not measured by the profile's design (it measures {', '.join(_profile_measurements(run))}):", "",
                  *design, ""]
    rows += [[key, "every measurement", "not reached: the run did not finish"] for key in not_reached(run)]
    if rows:
        text, _, _ = compact_table(rows, ["model", "measurement", "why"], keys=2)
        lines += [details(f"Failed to measure: {len(rows)} results", text)]
    else:
        lines += ["Every measurement the profile asked for finished."]
    return "\n".join(lines)


def _profile_measurements(run: Run) -> list[str]:
    return list(run.profile.get("measurements") or MEASUREMENTS)
