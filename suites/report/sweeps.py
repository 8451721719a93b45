"""The report's tables shaped like the paper's experiments beyond Table 1: retention against the
pruning ratio (Table 7, when the run has several ratio points) and the ablations of Appendix B (one
table per ablation, against the run's reference LaCo model). The intervals are the run's figures."""

from __future__ import annotations

from suites.claims import Claims
from suites.evidence import DENSE, NotMeasured, Run
from suites.figures import Figures
from suites.markdown import num, ratio_cell, table

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


def ratio_section(run: Run, claims: Claims, figures: Figures) -> tuple[str, dict, dict]:
    """Table 7 of the paper, for this run: every method at every ratio point, with paired intervals,
    and the curves the plot draws. Empty when the run has a single ratio point."""
    points = {m.point for k, m in run.models.items() if k != DENSE and m.point and not _is_ablation(run, k)}
    if len(points) < 2:
        return "", {}, {}
    rows, curves = _sweep_rows(run, figures)
    paper_rows, paper_points = _paper_table7(claims)
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


def _sweep_rows(run: Run, figures: Figures) -> tuple[list[list], dict[str, list[dict]]]:
    """One row per pruned model of the sweep, by ratio, and per series the points the plot draws."""
    series, rows, curves = series_of(run), [], {}
    ordered = sorted((k for k in series if not _is_ablation(run, k)),
                     key=lambda k: (run.models[k].pruning_ratio or 0, series[k]))
    for key in ordered:
        model = run.models[key]
        entry = {"ratio": model.pruning_ratio or 0.0}
        cells = [model.point, series[key], key, ratio_cell(run, key)]
        try:
            r = figures.retention(key)
            entry["retention"] = r.above_chance
            cells += [num(100 * figures.average(key)), r.per.fmt(".1f", 100), r.above_chance.fmt(".1f", 100)]
        except NotMeasured:
            cells += ["-", "-", "-"]
        try:
            entry["ppl"] = figures.ppl_ratio(key, DENSE)
            cells.append("×" + entry["ppl"].fmt(".3g"))
        except NotMeasured:
            cells.append("-")
        rows.append(cells)
        curves.setdefault(series[key], []).append(entry)
    return rows, curves


def _paper_table7(claims: Claims) -> tuple[list[list], dict[str, list[tuple[float, float]]]]:
    """The paper's Table 7 rows, and its points (ratio, Avg. / dense Avg.) per model for the plot."""
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
    return paper_rows, paper_points


def _is_ablation(run: Run, key: str) -> bool:
    ref = _paper_ref(run, key)
    return bool(ref) and ref.get("table") in ABLATION_TABLES


def _paper_ref(run: Run, key: str) -> dict | None:
    for m in run.profile.get("methods") or []:
        if m.get("label") == key:
            return m.get("paper")
    return None


def ablation_section(run: Run, claims: Claims, figures: Figures) -> str:
    """Appendix B of the paper, for this run: one table per ablation, our rows beside the paper's, each
    against the run's reference LaCo model (the row standing for the paper's Table 1 result)."""
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
            cells = [setting, key, ratio_cell(run, key)] + _against_reference(figures, key, reference)
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


def _against_reference(figures: Figures, key: str, reference: str | None) -> list[str]:
    """Avg., its difference to the reference, PPL and its ratio to the reference's (paired intervals)."""
    against = bool(reference) and key != reference
    cells = [_or_reason(lambda: num(100 * figures.average(key)), "-")]
    if against:
        cells.append(_or_reason(lambda: figures.difference(key, reference).fmt("+.1f", 100) + " pt"))
    else:
        cells.append("reference" if key == reference else "-")
    w = figures.run.ok(key, "perplexity")
    cells.append(num(w and (w.values.get("windows") or {}).get("ppl"), "{:.2f}"))
    cells.append(_or_reason(lambda: "×" + figures.ppl_ratio(key, reference).fmt(".3g")) if against else "-")
    return cells


def _or_reason(cell, missing: str | None = None) -> str:
    """The cell, or when its figure is not measured: `missing`, else the reason."""
    try:
        return cell()
    except NotMeasured as exc:
        return str(exc) if missing is None else missing
