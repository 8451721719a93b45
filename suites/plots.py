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
