"""The report's tables shaped like the paper's experiments beyond Table 1: retention against the
pruning ratio (Table 7, when the run has several ratio points) and the ablations of Appendix B (one
table per ablation, against the run's reference LaCo model). The intervals are the run's figures.

A model whose reached ratio lies more than POINT_TOLERANCE from the others of its ratio point is
flagged wherever its ratio is shown: its figures are then not at the point's ratio (a depth pruner
may overshoot by a layer or two where its siblings do not).
"""

from __future__ import annotations

import numpy as np

from suites.claims import Claims
from suites.evidence import DENSE, NotMeasured, Run
from suites.figures import Figures
from suites.markdown import details, num, ratio_cell, table, times_interval

ABLATION_TABLES = (10, 11, 12, 13, 15, 16, 17, 18)
POINT_TOLERANCE = 0.025  # the claims' "slightly smaller" slack: more apart than this, a model is not at its point


def paper_ref(run: Run, key: str) -> dict | None:
    """The paper's row a model of the profile stands beside (`paper` of its method entry)."""
    for m in run.profile.get("methods") or []:
        if m.get("label") == key:
            return m.get("paper")
    return None


def is_ablation(run: Run, key: str) -> bool:
    ref = paper_ref(run, key)
    return bool(ref) and ref.get("table") in ABLATION_TABLES


def reference_of(run: Run) -> str | None:
    """The model standing for the paper's Table 1 result in every ablation table."""
    return next((k for k in run.models if (paper_ref(run, k) or {}).get("setting") == "Table 1"), None)


def is_variant(run: Run, key: str) -> bool:
    """An ablation model other than the reference: one setting of LaCo changed."""
    return is_ablation(run, key) and (paper_ref(run, key) or {}).get("setting") != "Table 1"


def ratio_mismatches(run: Run) -> dict[str, str]:
    """{model: why} for each model whose ratio lies more than POINT_TOLERANCE from the median of the other
    models of its ratio point."""
    points: dict[str, list[str]] = {}
    for key, m in run.models.items():
        if key != DENSE and m.point and m.pruning_ratio is not None:
            points.setdefault(m.point, []).append(key)
    out = {}
    for point, keys in points.items():
        for key in keys:
            others = [run.models[k].pruning_ratio for k in keys if k != key]
            if not others:
                continue
            typical, own = float(np.median(others)), run.models[key].pruning_ratio
            if abs(own - typical) > POINT_TOLERANCE:
                out[key] = (f"{key} removed {own:.1%}, the other models of point {point} {typical:.1%} "
                            f"(more than {POINT_TOLERANCE:.1%} apart)")
    return out


def flagged_ratio(run: Run, key: str, mismatches: dict[str, str]) -> str:
    return ratio_cell(run, key) + (" ⚠ off its point" if key in mismatches else "")


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
    and the curves the plot draws. Empty when the run has a single ratio point, or synthetic weights (their
    retention and perplexity are those of random weights)."""
    points = {m.point for k, m in run.models.items() if k != DENSE and m.point and not is_ablation(run, k)}
    if len(points) < 2 or run.synthetic:
        return "", {}, {}
    mismatches = ratio_mismatches(run)
    rows, curves = _sweep_rows(run, figures, mismatches)
    paper_rows, paper_points = _paper_table7(claims)
    flags = [f"- ⚠ {why}" for why in mismatches.values()]
    text = "\n".join([
        "## Retention against the pruning ratio",
        "",
        details(
            f"The paper's Table 7 for this run: {len(rows)} models at {len(points)} ratio points, with the paper's rows",
            "Each method at each ratio point of this run. Per.: mean over benchmarks of pruned / dense; above chance: "
            "(avg − chance) / (dense avg − chance); PPL: perplexity / dense perplexity on the same windows. Every figure "
            "with its 95% paired-bootstrap interval.",
            *(["", *flags] if flags else []), "",
            table(rows, ["ratio point", "method", "model", "pruned", "Avg.", "Per. % [95%]", "above chance % [95%]",
                         "PPL vs dense [95%]"]),
            "",
            "The paper's Table 7 (LaCo on Llama2-7B and 13B, OpenCompass, Avg. over its 14 benchmarks; another model and "
            "another harness, not chance-normalised):",
            "",
            table(paper_rows, ["paper model", "pruned", "layers", "Avg.", "Avg. / dense Avg.", "note"]),
        ),
        "",
        f"![retention and perplexity against the pruning ratio]({run.id}/ratio.png)",
    ])
    return text, curves, paper_points


def _sweep_rows(run: Run, figures: Figures, mismatches: dict[str, str]) -> tuple[list[list], dict[str, list[dict]]]:
    """One row per pruned model of the sweep, by ratio, and per series the points the plot draws."""
    series, rows, curves = series_of(run), [], {}
    ordered = sorted((k for k in series if not is_ablation(run, k)),
                     key=lambda k: (run.models[k].pruning_ratio or 0, series[k]))
    for key in ordered:
        model = run.models[key]
        entry = {"ratio": model.pruning_ratio or 0.0}
        cells = [model.point, series[key], key, flagged_ratio(run, key, mismatches)]
        try:
            r = figures.retention(key)
            entry.update(retention=r.above_chance, kept=figures.average(key) / figures.average(DENSE, _tasks(figures, key)))
            cells += [num(100 * figures.average(key)), r.per.fmt(".1f", 100), r.above_chance.fmt(".1f", 100)]
        except NotMeasured:
            cells += ["-", "-", "-"]
        try:
            entry["ppl"] = figures.ppl_ratio(key, DENSE)
            cells.append(times_interval(entry["ppl"]))
        except NotMeasured:
            cells.append("-")
        rows.append(cells)
        curves.setdefault(series[key], []).append(entry)
    return rows, curves


def _tasks(figures: Figures, key: str) -> list[str]:
    return list(figures.paired(key, DENSE))


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


def ablation_section(run: Run, claims: Claims, figures: Figures) -> str:
    """Appendix B of the paper, for this run: one table per ablation, our rows beside the paper's, each
    against the run's reference LaCo model (the row standing for the paper's Table 1 result)."""
    by_table: dict[int, list[str]] = {}
    for key in run.models:
        ref = paper_ref(run, key)
        if ref and ref.get("table") in ABLATION_TABLES:
            by_table.setdefault(ref["table"], []).append(key)
    if not by_table:
        return ""
    reference = reference_of(run)
    intro = ("Each ablation changes one setting of LaCo. Ours: accuracy on this run's benchmarks and perplexity, the "
             "difference to the reference model with its 95% paired interval (the same items, the same windows); "
             f"reference: **{reference or 'none'}** (the paper's Table 1 row of every table), "
             f"{_reference_figures(run, claims, figures, reference, min(by_table))}. Paper: Llama2-7B at 27%, "
             "OpenCompass scores (BoolQ, PIQA, HeSw), another model and another harness.")
    rows, notes = [], []
    for number in sorted(by_table):
        table_def = claims.paper.table(number)
        rows += [[f"Table {number}", *_ablation_row(run, claims, figures, number, key, reference)]
                 for key in by_table[number] if key != reference]
        if table_def:
            notes.append(f"- Table {number}, {table_def.title}" + (f": {table_def.note}" if table_def.note else ""))
    body = [intro, "", table(rows, ["paper table", "setting", "model", "pruned", "Avg.", "Avg. − reference [95%]", "PPL",
                                    "PPL vs reference [95%]", "paper BoolQ / PIQA / HeSw"])]
    body += ["", "The paper's tables, with the transcription's notes:", "", *notes] if notes else []
    return "\n".join(["## Ablations (the paper's Appendix B)", "",
                      details(f"{len(rows)} models of {len(by_table)} of the paper's ablation tables, each against the "
                              f"reference {reference or '(none)'}", *body)])


def _reference_figures(run: Run, claims: Claims, figures: Figures, reference: str | None, number: int) -> str:
    """The reference's ratio, Avg. and PPL, and the paper's figures of its row (the same in every table)."""
    if reference is None:
        return "no reference model"
    w = run.ok(reference, "perplexity")
    ppl = num(w and (w.values.get("windows") or {}).get("ppl"), "{:,.2f}")
    avg = _or_reason(lambda: num(100 * figures.average(reference)), "-")
    prow = next(iter(claims.paper.rows(number, "Llama2-7B", "laco")), None)
    paper = " / ".join(f"{prow.values[c]:g}" for c in ("BoolQ", "PIQA", "HeSw") if c in prow.values) if prow else "-"
    return f"removed {ratio_cell(run, reference)}, Avg. {avg}, PPL {ppl}; the paper's row: {paper}"


def _ablation_row(run: Run, claims: Claims, figures: Figures, number: int, key: str, reference: str | None) -> list:
    ref = paper_ref(run, key) or {}
    prow = next(iter(claims.paper.rows(number, "Llama2-7B", ref.get("method") or None, ref.get("setting") or None)), None)
    paper = " / ".join(f"{prow.values[c]:g}" for c in ("BoolQ", "PIQA", "HeSw") if c in prow.values) if prow else "-"
    if prow and prow.ratio:
        paper += f" (at {prow.ratio:.1%})"
    setting = ref.get("setting") or ref.get("method")
    return [setting, key, ratio_cell(run, key), *_against_reference(figures, key, reference), paper]


def _against_reference(figures: Figures, key: str, reference: str | None) -> list[str]:
    """Avg., its difference to the reference, PPL and its ratio to the reference's (paired intervals)."""
    cells = [_or_reason(lambda: num(100 * figures.average(key)), "-")]
    cells.append(_or_reason(lambda: figures.difference(key, reference).fmt("+.1f", 100) + " pt") if reference else "-")
    w = figures.run.ok(key, "perplexity")
    cells.append(num(w and (w.values.get("windows") or {}).get("ppl"), "{:,.2f}"))
    cells.append(_or_reason(lambda: times_interval(figures.ppl_ratio(key, reference))) if reference else "-")
    return cells


def _or_reason(cell, missing: str | None = None) -> str:
    """The cell, or when its figure is not measured: `missing`, else the reason."""
    try:
        return cell()
    except NotMeasured as exc:
        return str(exc) if missing is None else missing
