"""A run as a markdown report (GitHub pipe tables via tabulate) with PNG plots beside it, readable in
two minutes.

The first screen: the run in a few lines, one table of every claim judged at its conditions with the
paper's figure beside ours and the verdict, and the findings that matter most, written from the figures
by rule. Everything else follows in collapsed blocks: the verdicts in full, the run, the checks of the
figures, the models, tables shaped like the paper's (dense reproduction, scores per benchmark with
retention, retention against the ratio, ablations, perplexity, pruning time, memory and tokens/s with
FLOPs and the compute-bound ideal), the time each measurement took, the code behind the numbers, LaCo's
search trace and what was not measured. Everything is read from the run, its figures (suites.figures,
computed once) and the verdicts; the report only formats, and measures nothing. The output holds no
clock time other than what the run recorded, so the same run renders the same text.

    overview.py  the run at a glance, the run in full, the models at the paper's conditions, the checks
    judged.py    the claims table of the first screen and the verdicts in full
    findings.py  the findings of the first screen
    models.py    the models, time per measurement, code versions, LaCo's search trace, not measured
    results.py   dense reproduction, accuracy, perplexity, pruning time, compute/memory/throughput
    sweeps.py    retention against the pruning ratio (Table 7) and the ablations (Appendix B)
    scale.py     a run on a synthetic stand-in beside Tables 4 and 20, and projected to the paper's GPU
    posttraining.py  the post-trained models, their loss curves (Fig. 3) and score kept (Table 6)
"""

from __future__ import annotations

from pathlib import Path

from laco import atomic
from suites.checks import run_checks
from suites.claims import Claims
from suites.evidence import Run
from suites.outcomes import Verdict
from suites.report.findings import findings_section
from suites.report.judged import claims_section, full_section
from suites.report.models import code_section, missing_section, models_section, time_section, trace_section
from suites.report.overview import at_conditions, checks_section, header, run_section
from suites.report.posttraining import post_training_section
from suites.report.results import (accuracy_section, dense_reproduction_section, efficiency_section, perplexity_section,
                                   pruning_time_section)
from suites.report.scale import scale_section
from suites.report.sweeps import ablation_section, ratio_mismatches, ratio_section
from suites.verdicts import Judge


def render(run: Run, claims: Claims, verdicts: list[Verdict] | None = None) -> tuple[str, dict]:
    """The markdown of the report and what its plots need: {"retention", "traces", "curves", "paper_points",
    "loss_curves", "controls", "kept_chains"}."""
    judge = Judge(run, claims)
    figures = judge.figures
    verdicts = judge.all() if verdicts is None else verdicts
    at, band = at_conditions(run, judge, claims)
    mismatches = ratio_mismatches(run)
    flags = list(mismatches.values()) + [f"check *{c.name}* does not hold: {c.detail}" for c in run_checks(figures)
                                         if not c.ok]
    accuracy, retention = accuracy_section(run, figures)
    ratios, curves, paper_points = ratio_section(run, claims, figures)
    trace, traces = trace_section(run)
    post_training, loss_curves, kept_chains = post_training_section(run, figures)
    parts = [header(run, verdicts), claims_section(run, verdicts, claims, band),
             findings_section(run, figures, verdicts, flags), scale_section(run, claims),
             full_section(run, verdicts, claims), run_section(run), checks_section(figures),
             models_section(run, at, mismatches), dense_reproduction_section(run, claims), accuracy, ratios,
             ablation_section(run, claims, figures), post_training, perplexity_section(run, figures),
             pruning_time_section(run),
             efficiency_section(run, figures), time_section(run), code_section(run), trace, missing_section(run)]
    plots = {"retention": retention, "traces": traces, "curves": curves, "paper_points": paper_points,
             "loss_curves": loss_curves, "controls": {k for k, m in run.models.items() if m.stage == "random-init"},
             "kept_chains": kept_chains}
    return "\n\n".join(p for p in parts if p) + "\n", plots


def write_report(run: Run, claims: Claims, out_dir: str | Path = "reports") -> Path:
    """reports/<run-id>.md and reports/<run-id>/*.png, each put in place whole (laco.atomic)."""
    from suites.plots import loss_plot, post_training_plot, ratio_curve_plot, retention_plot, similarity_plot

    out_dir = Path(out_dir)
    text, plots = render(run, claims)
    with atomic.folder(out_dir / run.id, if_exists="replace") as images:
        if plots["retention"]:
            retention_plot(plots["retention"], images / "retention.png")
        if plots["traces"]:
            similarity_plot(plots["traces"], images / "similarity.png")
        if plots["curves"]:
            ratio_curve_plot(plots["curves"], plots["paper_points"], images / "ratio.png")
        if plots["loss_curves"]:
            loss_plot(plots["loss_curves"], plots["controls"], images / "loss.png")
        if plots["kept_chains"]:
            post_training_plot(plots["kept_chains"], images / "post-training.png")
    return atomic.write_text(out_dir / f"{run.id}.md", text)
