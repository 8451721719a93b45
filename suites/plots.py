"""The report's PNG plots (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)

# No timestamps or version strings in the files, so the same run renders the same bytes.
_METADATA = {"Software": None}


def similarity_plot(traces: dict[str, dict], path: Path) -> Path:
    """LaCo's search, as the paper's layer-wise similarity figures: for every candidate merge
    (base layer l and the K layers above it) the similarity of the candidate model's last hidden
    states to the dense model's; filled marks were accepted, crosses rejected; dashed: T."""
    fig, ax = plt.subplots(figsize=(7.5, 3.8), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (key, record) in enumerate(traces.items()):
        steps, color = record.get("steps") or [], colors[i % len(colors)]
        x = [s["pointer"] for s in steps]
        y = [s["similarity"] for s in steps]
        ax.plot(x, y, color=color, linewidth=1, alpha=0.6, label=f"{key} (T={record['config']['T']:.3g})")
        ax.scatter([a for a, s in zip(x, steps) if s["accepted"]], [b for b, s in zip(y, steps) if s["accepted"]],
                   color=color, marker="o", zorder=3)
        ax.scatter([a for a, s in zip(x, steps) if not s["accepted"]],
                   [b for b, s in zip(y, steps) if not s["accepted"]], color=color, marker="x", zorder=3)
        ax.axhline(record["config"]["T"], color=color, linestyle="--", linewidth=0.8)
    ax.set_xlabel("merge base l (layer index; layers l+1..l+K merge into it)")
    ax.set_ylabel("cosine similarity to dense")
    ax.set_title("LaCo search: similarity of each candidate (o accepted, x rejected, -- threshold T)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def retention_plot(retention: dict[str, dict[str, float]], path: Path, lines=(0.8, 0.3)) -> Path:
    """Grouped bars: score as % of dense per benchmark (groups) and pruned model (bars)."""
    methods = list(retention)
    tasks = list(dict.fromkeys(t for r in retention.values() for t in r))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(tasks) + 2), 4.2), dpi=110)
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(tasks))]
        ax.bar(xs, [100 * retention[method].get(t, float("nan")) for t in tasks], width, label=method)
    for level in lines:
        ax.axhline(100 * level, color="grey", linestyle="--", linewidth=0.8)
    ax.axhline(100, color="black", linewidth=0.8)
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("% of dense")
    ax.set_ylim(0, max(110, 5 + max((100 * v for r in retention.values() for v in r.values()), default=100)))
    ax.set_title("Score kept per benchmark (dashed: 80% and 30% of dense)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(6, len(methods)), loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False)
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, format="png", metadata=_METADATA)
    plt.close(fig)
    return path


def ratio_curve_plot(curves: dict[str, list[dict]], paper: dict[str, list[tuple[float, float]]], path: Path) -> Path:
    """Retention against the pruning ratio, the shape of the paper's Table 7 / Fig. 4: per method the
    chance-normalised average retention with its 95% interval (left) and the perplexity relative to
    dense with its interval (right, log scale). The paper's Table 7 points are drawn as hollow marks:
    another model, another harness, and not chance-normalised."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (series, points) in enumerate(sorted(curves.items())):
        color = colors[i % len(colors)]
        points = sorted(points, key=lambda p: p["ratio"])
        x = [100 * p["ratio"] for p in points]
        for ax, key in ((left, "retention"), (right, "ppl")):
            shown = [(xi, p[key]) for xi, p in zip(x, points) if p.get(key)]
            if not shown:
                continue
            xs = [xi for xi, _ in shown]
            ys = [iv.estimate * (100 if key == "retention" else 1) for _, iv in shown]
            lo = [max(0.0, (iv.estimate - iv.low)) * (100 if key == "retention" else 1) for _, iv in shown]
            hi = [(iv.high - iv.estimate) * (100 if key == "retention" else 1) for _, iv in shown]
            ax.errorbar(xs, ys, yerr=[lo, hi], color=color, marker="o", capsize=3, linewidth=1, label=series)
    for j, (model, points) in enumerate(sorted(paper.items())):
        left.plot([100 * r for r, _ in points], [100 * v for _, v in points], linestyle=":", marker=["s", "^"][j % 2],
                  markerfacecolor="none", color="black", label=f"paper {model} (OpenCompass Avg./Dense Avg.)")
    left.axhline(80, color="grey", linestyle="--", linewidth=0.8)
    left.axhline(0, color="black", linewidth=0.6)
    left.set_xlabel("parameters removed (%)")
    left.set_ylabel("retention above chance (%)")
    left.set_title("(avg − chance) / (dense avg − chance), 95% paired interval", fontsize=9)
    right.set_yscale("log")
    right.axhline(1, color="black", linewidth=0.6)
    right.set_xlabel("parameters removed (%)")
    right.set_ylabel("perplexity / dense perplexity")
    right.set_title("wikitext-2 windows, 95% paired interval", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3)
    left.legend(fontsize=7, loc="best")
    return _save(fig, path)
