"""The report's post-training section (LaCo §4.1, Tables 6, 21, 24, Figure 3): each model the bench trained
after pruning with its recipe, tokens, wall time and the loss it reached; the loss curves on one figure;
and each post-trained model's share of the dense average before post-training, after it and after
re-pruning. Empty for a run that post-trained nothing, so such a report is unchanged."""

from __future__ import annotations

import numpy as np

from suites import stages
from suites.evidence import NotMeasured, Run
from suites.figures import Figures
from suites.markdown import details, num, pct_interval, ratio_cell, table

STAGE_NAMES = ("before post-training", "post-trained", "re-pruned")  # the bars of each chain (Table 6's rows)


def post_training_section(run: Run, figures: Figures) -> tuple[str, dict, dict]:
    """(markdown, {model: loss curve}, {post-trained model: {stage: (its model, Avg. / dense Avg. interval)}})."""
    trained = [k for k, m in run.models.items() if m.pruned_stage]
    if not trained:
        return "", {}, {}
    curves = {k: run.models[k].post_training.get("loss_curve") or [] for k in trained}
    chains = {k: retention_chain(run, figures, k) for k in trained if run.models[k].stage == "post-trained"}
    rows = [model_row(run, figures, k) for k in trained]
    body = ["Each model the bench trained after pruning (a profile entry's `post_train`): its recipe, the tokens it "
            "trained on and the wall time, its loss curve's first logged loss and the mean of the last 10% of its "
            "logged steps, and its average score over dense's (Avg. / dense Avg., 95% paired interval) beside the "
            "same pruned model's before training. A random-init row is the control: the same recipe from random "
            "weights of the same shape.", "",
            table(rows, ["model", "method", "pruned", "recipe", "start", "tokens", "steps", "wall s", "loss first → last",
                         "Avg./dense [95%]", "before post-training", "its Avg./dense [95%]"])]
    plots = [f"![training loss of every post-trained model]({run.id}/loss.png)"]
    if any(len(c) > 1 for c in chains.values()):
        plots.append(f"![score kept before and after post-training and after re-pruning]({run.id}/post-training.png)")
    text = "\n".join(["## Post-training", "", details(f"{len(trained)} post-trained models: recipe, tokens, wall time, "
                                                      "loss and score kept", *body), "", *plots])
    return text, curves, {k: c for k, c in chains.items() if len(c) > 1}


def model_row(run: Run, figures: Figures, key: str) -> list:
    model = run.models[key]
    post = model.post_training
    before = stages.before_post_training(run, key)
    curve = post.get("loss_curve") or []
    tail = curve[-max(1, int(np.ceil(stages.LOSS_TAIL * len(curve)))):]
    loss = f"{curve[0]['loss']:.3f} → {np.mean([p['loss'] for p in tail]):.3f}" if curve else "-"
    return [key, model.method, ratio_cell(run, key), post.get("recipe", "-"),
            "random init" if post.get("random_init") else "pruned", f"{post.get('tokens_seen', 0):,}",
            num(post.get("steps"), "{:d}"), num(post.get("seconds"), "{:.0f}"), loss, kept_text(figures, key),
            ", ".join(before) or "-", kept_text(figures, before[0]) if before else "-"]


def kept(figures: Figures, key: str):
    """Avg. / dense Avg. with its interval, or None when the run has not the accuracy it needs."""
    try:
        return figures.retention(key).of_average
    except NotMeasured:
        return None


def kept_text(figures: Figures, key: str) -> str:
    interval = kept(figures, key)
    return pct_interval(interval) if interval is not None else "-"


def retention_chain(run: Run, figures: Figures, key: str) -> dict:
    """Table 6's rows for one post-trained model: the share of dense's average before its training, after
    it, and after re-pruning it (each where the run has it)."""
    before = stages.before_post_training(run, key)
    re_pruned = [k for k, m in run.models.items() if m.stage == "re-pruned" and key in stages.re_pruned_from(run, k)]
    chain = {}
    for name, models in zip(STAGE_NAMES, (before[:1], [key], re_pruned[:1])):
        interval = kept(figures, models[0]) if models else None
        if interval is not None:
            chain[name] = (models[0], interval)
    return chain
