"""One lm-eval evaluation over the generated task folder, with per-task item limits.

Imported by the main process (HFLM on the in-memory model) and by the vLLM worker (lm-eval's
`vllm` backend, in the vLLM environment), so it needs nothing but lm-eval and the standard
library. Returns plain JSON-able data; `bench.accuracy` turns it into the result schema.
"""

from __future__ import annotations

import math


def request_cache_name(model_fingerprint: str, model_side: str) -> str:
    """File stem of lm-eval's request cache (CachingLM adds "_rank<N>.db").

    lm-eval keys cached answers by the request alone, with no model identity: two models given
    one cache file would share answers. The stem therefore carries the model fingerprint and a
    digest of everything on the model side that changes an answer (backend, device, dtype,
    context length)."""
    return f"requests-{model_fingerprint}-{model_side}"


def run_lm_eval(
    lm,
    tasks: dict[str, dict],
    *,
    task_folder: str,
    include_builtin: bool,
    cache_path: str | None,
    seed: int,
    bootstrap_iters: int,
    model_args: dict | None = None,
) -> dict:
    """Evaluate `tasks` ({name: {limit, num_fewshot, docs}}) with `lm` (an LM object or a backend name
    such as "vllm" with `model_args`); returns {"results", "n", "task_hashes", "subtasks", "items",
    "hashes", "docs", "n_available"}. `docs` ({leaf: [doc index]}, optional) scores exactly those documents of those
    leaf tasks (the ones the shared result cache lacks); without it, the first `limit` of each."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=include_builtin, include_path=task_folder)
    objects, samples, subtasks, docs = load_tasks(manager, tasks)
    out = lm_eval.simple_evaluate(
        model=lm,
        model_args=model_args,
        tasks=objects,
        task_manager=manager,
        samples=samples or None,
        use_cache=cache_path,
        bootstrap_iters=bootstrap_iters,
        log_samples=True,
        random_seed=seed,
        numpy_random_seed=seed,
        torch_random_seed=seed,
        fewshot_random_seed=seed,
    )
    hashes = {task: sample_hashes(samples) for task, samples in out.get("samples", {}).items()}
    n = {task: int(v.get("effective", v.get("original", 0))) for task, v in out.get("n-samples", {}).items()}
    items = {task: item_outcomes(samples) for task, samples in out.get("samples", {}).items()}
    return {"results": _plain(out["results"]), "n": n, "task_hashes": {t: task_hash(h) for t, h in hashes.items()},
            "subtasks": subtasks, "items": items, "hashes": hashes, "docs": docs,
            "n_available": docs}  # the data set's items, beyond the limit: what a claim could still be decided on


def sample_hashes(samples: list[dict]) -> list[str]:
    """Each sample's document, prompt and target hashes, in document order."""
    return [s["doc_hash"] + s["prompt_hash"] + s["target_hash"] for s in sorted(samples, key=lambda s: s["doc_id"])]


def task_hash(hashes: list[str]) -> str:
    """The task hash as lm-eval's EvaluationTracker computes it: one hash over every sample's
    document, prompt and target hashes, in document order."""
    from lm_eval.utils import hash_string

    return hash_string("".join(hashes))


def load_tasks(manager, tasks: dict[str, dict]) -> tuple[list, dict, dict, dict]:
    """lm-eval's task objects of `tasks` with their few-shot counts set, the items each leaf task
    is limited to, each task's leaf tasks, and each leaf's number of documents."""
    objects, samples, subtasks, docs = [], {}, {}, {}
    for name, opts in tasks.items():
        loaded = manager.load([name])
        subtasks[name] = sorted(loaded["tasks"])
        chosen = opts.get("docs")
        if chosen is None:
            objects.append(loaded["groups"].get(name) or loaded["tasks"][name])
        else:  # only the leaves with documents to score, as tasks of their own
            objects += [loaded["tasks"][leaf] for leaf in sorted(chosen)]
        for leaf_name, leaf in loaded["tasks"].items():
            leaf.set_config(key="num_fewshot", value=opts.get("num_fewshot") or 0)
            docs[leaf_name] = len(leaf.eval_docs)
            if chosen is not None and leaf_name in chosen:
                samples[leaf_name] = sorted(chosen[leaf_name])
            elif chosen is None and opts.get("limit") is not None:  # the first N, as lm-eval's --limit takes them
                samples[leaf_name] = list(range(min(opts["limit"], len(leaf.eval_docs))))
    return objects, samples, subtasks, docs


ITEM_METRICS = ("acc", "acc_norm")


def item_outcomes(samples: list[dict]) -> dict:
    """One task's per-item evidence from lm-eval's samples, as parallel lists in document order:
    doc_id, a short hash of the document (two runs scored the same item only if both agree),
    correct (1/0) by each metric the task reports, and the number of choices (chance = 1/choices)."""
    samples = sorted(samples, key=lambda s: s["doc_id"])
    out: dict = {"doc_id": [s["doc_id"] for s in samples], "doc_hash": [s["doc_hash"][:12] for s in samples]}
    for metric in ITEM_METRICS:
        if all(metric in s for s in samples) and samples:
            out[metric] = [int(round(float(s[metric]))) for s in samples]
    out["n_choices"] = [len(s.get("filtered_resps") or ()) for s in samples]
    return out


def _plain(obj):
    """Results as JSON-able floats; lm-eval leaves numpy scalars, NaN, and "N/A" for a stderr it
    cannot compute (e.g. a group of one item per task): those become None."""
    if isinstance(obj, dict):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if hasattr(obj, "item"):
        obj = obj.item()
    if (isinstance(obj, float) and math.isnan(obj)) or obj == "N/A":
        return None
    return obj
