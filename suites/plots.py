"""The report's and the history's PNG plots (matplotlib, Agg backend: no display needed).

Legends stand outside the axes and every figure is saved with a tight bounding box, so no legend is
clipped; series get distinct colour and line-style pairs (tab20 and four line styles: 80 series
before any pair repeats)."""

from __future__ import annotations

from itertools import product
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from matplotlib.patches import Patch  # noqa: E402

# No timestamps or version strings in the files, so the same run renders the same bytes.
_METADATA = {"Software": None}
LINESTYLES = ("-", "--", ":", "-.")


def styles(n: int) -> list[tuple[tuple, str]]:
    """n distinct (colour, line style) pairs: the 20 colours of tab20 (its 10 dark ones first, then their
    light pairs) with a solid line first."""
    colors = plt.get_cmap("tab20").colors[0::2] + plt.get_cmap("tab20").colors[1::2]
    return [(c, ls) for ls, c in product(LINESTYLES, colors)][:n]


def similarity_plot(traces: dict[str, dict], path: Path) -> Path:
    """LaCo's search, as the paper's layer-wise similarity figures: for every candidate merge
    (base layer l and the K layers above it) the similarity of the candidate model's last hidden
    states to the dense model's; filled marks were accepted, crosses rejected; thin line: T."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2), dpi=110)
    for (key, record), (color, linestyle) in zip(traces.items(), styles(len(traces))):
        steps = record.get("steps") or []
        x = [s["pointer"] for s in steps]
        y = [s["similarity"] for s in steps]
        ax.plot(x, y, color=color, linestyle=linestyle, linewidth=1.2, label=f"{key} (T={record['config']['T']:.3g})")
        ax.scatter([a for a, s in zip(x, steps) if s["accepted"]], [b for b, s in zip(y, steps) if s["accepted"]],
                   color=color, marker="o", zorder=3)
        ax.scatter([a for a, s in zip(x, steps) if not s["accepted"]],
                   [b for b, s in zip(y, steps) if not s["accepted"]], color=color, marker="x", zorder=3)
        ax.axhline(record["config"]["T"], color=color, linestyle=linestyle, linewidth=0.6, alpha=0.7)
    ax.set_xlabel("merge base l (layer index; layers l+1..l+K merge into it)")
    ax.set_ylabel("cosine similarity to dense")
    ax.set_title("LaCo search: similarity of each candidate (o accepted, x rejected, thin line: threshold T)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=1 if len(traces) <= 20 else 2, frameon=False)
    return save(fig, path)


def retention_plot(retention: dict[str, dict[str, float]], path: Path, lines=(0.8, 0.3)) -> Path:
    """Grouped bars: score as % of dense per benchmark (groups) and pruned model (bars)."""
    methods = list(retention)
    tasks = list(dict.fromkeys(t for r in retention.values() for t in r))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks) + 2), 4.2), dpi=110)
    width = 0.8 / max(1, len(methods))
    colors = [c for c, _ in styles(len(methods))]
    for i, method in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [100 * retention[method].get(t, float("nan")) for t in tasks], width, label=method,
               color=colors[i], hatch="//" if i >= 20 else None)
    for level in lines:
        ax.axhline(100 * level, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(100, color="black", linewidth=0.8)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("% of dense")
    ax.set_ylim(0, max(110, 5 + max((100 * v for r in retention.values() for v in r.values()), default=100)))
    ax.set_title("Score kept per benchmark (dashed: 80% and 30% of dense)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(6, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    return save(fig, path)


def loss_plot(curves: dict[str, list[dict]], controls: set[str], path: Path) -> Path:
    """The training loss of every post-trained model against the tokens it has seen, on one figure (the
    shape of LaCo's Figure 3); a random-init control dashed."""
    fig, ax = plt.subplots(figsize=(8.5, 4.2), dpi=110)
    for (key, curve), (color, linestyle) in zip(curves.items(), styles(len(curves))):
        label = f"{key} (random init)" if key in controls else key
        ax.plot([p["tokens"] for p in curve], [p["loss"] for p in curve], color=color,
                linestyle="--" if key in controls else linestyle, linewidth=1.2, label=label)
    ax.set_xlabel("training tokens seen")
    ax.set_ylabel("training loss (nats per token; distill: its combined loss)")
    ax.set_title("Post-training loss (dashed: the same training from random weights of the same shape)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save(fig, path)


def post_training_plot(chains: dict[str, dict[str, tuple]], path: Path) -> Path:
    """The shape of LaCo's Table 6: per post-trained model, the share of the dense average kept before its
    training, after it and after re-pruning ({model: {stage: (the stage's model, interval)}}), with 95%
    paired intervals; each bar names its model."""
    stages = list(dict.fromkeys(stage for chain in chains.values() for stage in chain))
    fig, ax = plt.subplots(figsize=(max(6.0, 2.2 * len(chains) + 2), 4.2), dpi=110)
    width = 0.8 / max(1, len(stages))
    for i, (stage, (color, _)) in enumerate(zip(stages, styles(len(stages)))):
        shown = [(g, *chain[stage]) for g, chain in enumerate(chains.values()) if stage in chain]
        xs = [g + (i - (len(stages) - 1) / 2) * width for g, _, _ in shown]
        ax.bar(xs, [100 * iv.estimate for _, _, iv in shown], width, color=color, label=stage)
        _errorbars(ax, xs, [iv for _, _, iv in shown], 100, color="black", linestyle="none", markersize=2)
        for x, (_, model, _) in zip(xs, shown):
            ax.annotate(model, (x, 2), rotation=90, fontsize=6, ha="center", va="bottom")
    ax.axhline(100, color="black", linewidth=0.8)
    ax.set_xticks(range(len(chains)), list(chains), fontsize=8)
    ax.set_ylabel("Avg. / dense Avg. (%)")
    ax.set_title("Score kept before and after post-training, and after re-pruning (95% paired intervals)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save(fig, path)


def save(fig, path: Path) -> Path:
    """The figure as PNG, cut to what it draws (a legend outside the axes included)."""
    fig.savefig(path, format="png", metadata=_METADATA, bbox_inches="tight", pad_inches=0.15)
    plt.close(fig)
    return path


def _errorbars(ax, xs: list[float], intervals: list, scale: float, **style) -> None:
    ys = [iv.estimate * scale for iv in intervals]
    lo = [max(0.0, iv.estimate - iv.low) * scale for iv in intervals]
    hi = [max(0.0, iv.high - iv.estimate) * scale for iv in intervals]
    ax.errorbar(xs, ys, yerr=[lo, hi], capsize=3, linewidth=1, marker="o", **style)


def ratio_curve_plot(curves: dict[str, list[dict]], paper: dict[str, list[tuple[float, float]]], path: Path) -> Path:
    """Retention against the pruning ratio, the shape of the paper's Table 7 / Fig. 4, like with like in
    three panels: (a) the score kept without chance normalisation, Avg. / dense Avg., ours beside the
    paper's Table 7 points (the same formula; another model, another harness); (b) ours above chance with
    the 95% interval; (c) the perplexity relative to dense with its interval (log scale)."""
    fig, (kept, above, ppl) = plt.subplots(1, 3, figsize=(15, 4.2), dpi=110)
    for (series, points), (color, linestyle) in zip(sorted(curves.items()), styles(len(curves))):
        points = sorted(points, key=lambda p: p["ratio"])
        style = {"color": color, "linestyle": linestyle, "label": series}
        shown = [p for p in points if p.get("kept") is not None]
        if shown:
            kept.plot([100 * p["ratio"] for p in shown], [100 * p["kept"] for p in shown], marker="o", linewidth=1, **style)
        for ax, key, scale in ((above, "retention", 100), (ppl, "ppl", 1)):
            shown = [p for p in points if p.get(key)]
            if shown:
                _errorbars(ax, [100 * p["ratio"] for p in shown], [p[key] for p in shown], scale, **style)
    for j, (model, points) in enumerate(sorted(paper.items())):
        kept.plot([100 * r for r, _ in points], [100 * v for _, v in points], linestyle="none", marker=["s", "^"][j % 2],
                  markerfacecolor="none", markersize=8, color="black", label=f"paper Table 7, {model}")
    kept.axhline(80, color="grey", linestyle="--", linewidth=0.8)
    kept.set_ylabel("Avg. / dense Avg. (%)")
    kept.set_title("(a) score kept, not chance-normalised: ours and the paper's", fontsize=9)
    above.axhline(80, color="grey", linestyle="--", linewidth=0.8)
    above.axhline(0, color="black", linewidth=0.6)
    above.set_ylabel("(avg − chance) / (dense avg − chance) (%)")
    above.set_title("(b) ours above chance, 95% paired interval", fontsize=9)
    ppl.set_yscale("log")
    ppl.axhline(1, color="black", linewidth=0.6)
    ppl.set_ylabel("perplexity / dense perplexity")
    ppl.set_title("(c) wikitext-2 windows, 95% paired interval", fontsize=9)
    for ax in (kept, above, ppl):
        ax.set_xlabel("parameters removed (%)")
        ax.grid(alpha=0.3)
    legend = {}
    for ax in (kept, above, ppl):
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    labels = list(legend)
    fig.legend([legend[label] for label in labels], labels, fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=min(5, len(labels)), frameon=False)
    fig.tight_layout()
    return save(fig, path)


def history_plot(figure, runs: list[str], regressed: set[str], path: Path) -> Path:
    """One figure across runs (suites.history.Figure): its estimate with its interval per run, the claim's
    threshold (dashed), the raw absolute rate beside its normalised one, the runs `laco compare` found
    regressed shaded red."""
    fig, ax = plt.subplots(figsize=(max(6.0, 0.7 * len(runs) + 3), 3.6), dpi=110)
    for x, run in enumerate(runs):
        if run in regressed:
            ax.axvspan(x - 0.4, x + 0.4, color="tab:red", alpha=0.15, linewidth=0)
    for points, style in ((figure.raw, {"color": "grey", "markerfacecolor": "none", "label": "raw"}),
                          (figure.points, {"color": "tab:blue", "label": "normalised by the machine probe"
                                           if figure.raw else "estimate, 95% interval"})):
        xs = [x for x, run in enumerate(runs) if run in points]
        if xs:
            ys = [points[runs[x]] for x in xs]
            ax.errorbar(xs, [p.estimate for p in ys], yerr=[[p.estimate - p.low for p in ys], [p.high - p.estimate for p in ys]],
                        marker="o", capsize=3, linewidth=1, **style)
    if figure.threshold is not None:
        ax.axhline(figure.threshold, color="black", linestyle="--", linewidth=0.8, label="claim's threshold")
    handles, labels = ax.get_legend_handles_labels()
    if regressed & set(runs):
        handles.append(Patch(color="tab:red", alpha=0.15))
        labels.append("regression (laco compare)")
    ax.set_xticks(range(len(runs)), runs, rotation=25, ha="right", fontsize=7)
    ax.set_ylabel(figure.unit)
    ax.set_title(figure.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    return save(fig, path)
