"""Accuracy item by item across runs: a task's items in the shared result cache, the documents still
to score, and the task's scores rebuilt from its items.

A task's items are keyed (`bench.results_cache`) by the model and by what decides one item's score:
lm-eval's model side (backend, dtype, device, max_length, the vLLM settings), the task (name, few-shot
count, seed, its data and generated definition) and lm-eval's version; not by batch size or limit. A
run asking for the first N documents of a leaf task scores only those the cache lacks (lm-eval's
`samples`), then merges. With few-shot examples a document's examples depend on the documents drawn
before it (lm-eval samples them from one random stream per task), so a leaf missing any document is
scored whole again, which gives what a fresh run gives.

Every result's scores, merged or fresh, are rebuilt from its items with lm-eval's own formulas: a
leaf's metric is the mean of its items (its stderr lm-eval's `mean_stderr` when bootstrap_iters > 0,
none otherwise, as lm-eval gives), a group's the size-weighted mean of its leaves (the generated
groups weight by size) with the pooled stderr, a task hash lm-eval's hash over the items' hashes in
document order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench.lm_eval_run import ITEM_METRICS, task_hash
from laco.provenance import fingerprint

MODEL_SIDE = ("backend", "dtype", "device", "max_length", "vllm", "lm_eval", "seed")


def task_key(name: str, settings: dict, folder: Path) -> str:
    """What one item's score of task `name` depends on, besides the model."""
    files = [folder / f"{name}.yaml", *sorted((folder / name).glob("*.yaml"))]
    definition = {str(p.relative_to(folder)): p.read_text(encoding="utf-8") for p in files if p.is_file()}
    return fingerprint({"task": name, "num_fewshot": settings["tasks"][name]["num_fewshot"],
                        "data": settings["data"].get(name), "definition": fingerprint(definition),
                        **{k: settings.get(k) for k in MODEL_SIDE}})


def wanted(opts: dict, documents: int) -> range:
    """The documents of a leaf a task's options ask for: the first `limit`, or all."""
    return range(documents if opts.get("limit") is None else min(opts["limit"], documents))


@dataclass
class TaskPlan:
    """One task: the items the cache has, its leaves' sizes, and what is still to score per leaf
    (None: never scored, lm-eval scores it as asked; {}: nothing)."""

    name: str
    key: str
    opts: dict
    cached: dict = field(default_factory=dict)  # {leaf: {doc_id: item}}
    docs: dict = field(default_factory=dict)  # {leaf: documents}
    missing: dict | None = None

    @property
    def request(self) -> dict | None:
        """The task as lm-eval is asked for it; None when every item is cached."""
        if self.missing == {}:
            return None
        return {**self.opts, **({"docs": self.missing} if self.missing is not None else {})}


def plan(cache, model: str | None, name: str, opts: dict, key: str) -> TaskPlan:
    cached, docs = cache.items(model, key) if cache else ({}, {})
    out = TaskPlan(name, key, opts, cached, docs)
    if not docs:
        return out
    out.missing = {}
    for leaf, documents in docs.items():
        asked = wanted(opts, documents)
        todo = [i for i in asked if i not in cached.get(leaf, {})]
        if todo:
            out.missing[leaf] = list(asked) if opts.get("num_fewshot") else todo
    return out


def new_items(raw: dict | None, leaves: list[str]) -> dict[str, list[dict]]:
    """{leaf: [item]} lm-eval just scored: doc_id, hash, and the per-item outcomes."""
    out = {}
    for leaf in leaves:
        if not raw or leaf not in raw["items"]:
            continue
        items, hashes = raw["items"][leaf], raw["hashes"][leaf]
        keys = [k for k in items if k != "doc_id"]
        out[leaf] = [{"doc_id": d, "hash": hashes[i], **{k: items[k][i] for k in keys}}
                     for i, d in enumerate(items["doc_id"])]
    return out


def merged_raw(plans: list[TaskPlan], raw: dict | None, bootstrap_iters: int) -> tuple[dict, dict]:
    """The plans' tasks in `run_lm_eval`'s shape, from cached and newly scored items, and per task
    {"items_reused", "items_scored", "items_reused_from"}."""
    out: dict = {"results": {}, "n": {}, "n_available": {}, "task_hashes": {}, "subtasks": {}, "items": {}}
    counts = {}
    for p in plans:
        leaves = (raw or {}).get("subtasks", {}).get(p.name) or sorted(p.docs)
        docs = {leaf: p.docs.get(leaf, (raw or {}).get("docs", {}).get(leaf, 0)) for leaf in leaves}
        fresh = {leaf: {r["doc_id"]: r for r in rows} for leaf, rows in new_items(raw, leaves).items()}
        reused, origins = 0, []
        for leaf in leaves:
            rows = []
            for i in wanted(p.opts, docs[leaf]):
                row = fresh.get(leaf, {}).get(i)
                if row is None:
                    row = p.cached[leaf][i]
                    reused += 1
                    origins.append(row["origin"]["run_id"])
                rows.append(row)
            out["items"][leaf], out["results"][leaf] = items_of(rows), leaf_results(rows, bootstrap_iters)
            out["n"][leaf], out["task_hashes"][leaf] = len(rows), task_hash([r["hash"] for r in rows])
            out["n_available"][leaf] = docs[leaf]
        out["subtasks"][p.name] = leaves
        if leaves != [p.name]:
            out["results"][p.name] = group_results([out["results"][leaf] for leaf in leaves], [out["n"][x] for x in leaves])
        total = sum(out["n"][leaf] for leaf in leaves)
        counts[p.name] = {"items_reused": reused, "items_scored": total - reused,
                          "items_reused_from": sorted(set(origins))}
    return out, counts


def items_of(rows: list[dict]) -> dict:
    """Items as the result keeps them: parallel lists in document order (bench.lm_eval_run.item_outcomes)."""
    keys = [k for k in ("doc_id", "doc_hash", *ITEM_METRICS, "n_choices") if rows and all(k in r for r in rows)]
    return {k: [r[k] for r in rows] for k in keys}


def leaf_results(rows: list[dict], bootstrap_iters: int) -> dict:
    from lm_eval.api.metrics import mean, mean_stderr

    out = {}
    for metric in ITEM_METRICS:
        if rows and all(metric in r for r in rows):
            xs = [r[metric] for r in rows]
            out[f"{metric},none"] = mean(xs)
            out[f"{metric}_stderr,none"] = mean_stderr(xs) if bootstrap_iters > 0 and len(xs) > 1 else None
    return out


def group_results(leaves: list[dict], sizes: list[int]) -> dict:
    from lm_eval.api.metrics import aggregate_subtask_metrics, pooled_sample_stderr

    out = {}
    for metric in ITEM_METRICS:
        key, err = f"{metric},none", f"{metric}_stderr,none"
        if leaves and all(leaf.get(key) is not None for leaf in leaves):
            out[key] = aggregate_subtask_metrics([leaf[key] for leaf in leaves], sizes, True)
            stderrs = [leaf.get(err) for leaf in leaves]
            out[err] = float(pooled_sample_stderr(stderrs, sizes)) if None not in stderrs else None
    return out
