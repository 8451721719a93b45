"""Accuracy: lm-eval's own tasks and scoring on the model under measurement.

Backend `hf` wraps the in-memory model in lm-eval's HFLM with its tokenizer passed explicitly;
backend `vllm` runs lm-eval's vllm backend (tensor_parallel_size from the profile) in the vLLM
environment on the saved weights. Both go through `bench.lm_eval_run` on the same generated
task folder, and both keep a request cache of their own per model (see `request_cache_name`).

Each task is a part of the result (`bench.parts`): a task that fails leaves the others kept, and a
resume scores only the failed ones. Items come from the shared result cache where it has them, and
only the others are scored (`bench.accuracy_items`); on the hf backends each task is scored apart
(one failing task cannot take the others down), on vLLM all at once (one engine start).
"""

from __future__ import annotations

import time
from importlib import metadata

from bench import accuracy_items
from bench.lm_eval_run import request_cache_name, run_lm_eval
from bench.parts import Parts, cache_model, origin
from bench.store import now, settings_hash
from bench.subject import Outcome, model_device
from bench.tasks import NOT_IN_LM_EVAL, PAPER_BENCHMARKS, default_metric
from laco.provenance import fingerprint


def settings(ctx) -> dict:
    acc = ctx.profile.accuracy
    prepared = ctx.tasks()
    tasks = {
        name: {"limit": opts.limit, "num_fewshot": opts.num_fewshot or 0,
               "metric": opts.metric or prepared.metrics.get(name) or default_metric(name)}
        for name, opts in acc.tasks.items() if name in prepared.available
    }
    out = {
        "backend": acc.backend,
        "batch_size": acc.batch_size,
        "max_length": acc.max_length,
        "bootstrap_iters": acc.bootstrap_iters,
        "tasks": tasks,
        "data": {name: prepared.data.get(name) for name in tasks},
        "not_available": {k: v for k, v in prepared.not_available.items() if k in acc.tasks or k in NOT_IN_LM_EVAL},
        "notes": {k: v for k, v in prepared.notes.items() if k in tasks},
        "lm_eval": metadata.version("lm_eval"),
        "dtype": ctx.profile.model.dtype,
        "device": model_device(ctx.dense_load_args()),
        "seed": ctx.profile.seed,
    }
    if acc.backend == "vllm":
        out["vllm"] = ctx.vllm_settings()
    return out


def measure(subject, settings: dict, ctx) -> Outcome:
    if not settings["tasks"]:
        return Outcome.not_available("no task of the profile can be evaluated: "
                                     + "; ".join(f"{k}: {v}" for k, v in settings["not_available"].items()))
    parts = Parts(subject, "accuracy", ctx)
    digests = {name: settings_hash(task_settings(settings, name)) for name in settings["tasks"]}
    todo = [name for name in settings["tasks"] if not parts.kept(name, digests[name])]
    scored = {name: {"scores": parts.earlier["tasks"][name], "items": parts.earlier["items"][name]}
              for name in settings["tasks"] if name not in todo}
    for names in [todo] if settings["backend"] == "vllm" and todo else [[name] for name in todo]:
        got = parts.attempt(names, digests, lambda names=names: score(subject, names, settings, ctx))
        if isinstance(got, Outcome):  # the engine cannot run here: the whole result says why
            return got
        for name, task in (got or {}).items():
            scored[name] = task
            parts.record[name].update(task.pop("counts"))
    values = {"lm_eval_version": settings["lm_eval"], "tasks": {}, "not_available": dict(settings["not_available"]),
              # the paper's benchmarks lm-eval has but this profile leaves out (for time, say)
              "not_in_profile": {b: t for b, t in PAPER_BENCHMARKS.items()
                                 if t and t not in settings["tasks"] and t not in settings["not_available"]},
              "items": {}, "notes": dict(settings.get("notes") or {})}
    for name in settings["tasks"]:
        if name in scored:
            values["tasks"][name], values["items"][name] = scored[name]["scores"], scored[name]["items"]
    return parts.outcome(values)


def task_settings(settings: dict, name: str) -> dict:
    """What one task's scores depend on: its own options and data, and the model side of lm-eval."""
    shared = ("backend", "batch_size", "max_length", "bootstrap_iters", "lm_eval", "dtype", "device", "seed", "vllm")
    return {"task": name, **settings["tasks"][name], "data": settings["data"].get(name),
            **{k: settings.get(k) for k in shared}}


def score(subject, names: list[str], settings: dict, ctx) -> dict | Outcome:
    """{task: {"scores", "items", "counts"}} of `names`, scoring only the items the shared cache lacks."""
    cache, model = ctx.results_cache, cache_model(ctx, subject)
    folder = ctx.tasks().folder
    plans = [accuracy_items.plan(cache, model, n, settings["tasks"][n], accuracy_items.task_key(n, settings, folder))
             for n in names]
    asked = {p.name: p.request for p in plans if p.request is not None}
    started, t0 = now(), time.perf_counter()
    raw = evaluate(subject, asked, settings, ctx) if asked else None
    if isinstance(raw, Outcome):
        return raw
    if cache and raw:
        for p in plans:
            leaves = raw["subtasks"].get(p.name, [])
            cache.add_items(model, p.key, {leaf: raw["docs"][leaf] for leaf in leaves},
                            accuracy_items.new_items(raw, leaves), origin(ctx, started, time.perf_counter() - t0))
    merged, counts = accuracy_items.merged_raw(plans, raw, settings.get("bootstrap_iters", 0))
    out = {}
    for name in names:
        scores, items = task_scores(merged, name, settings["tasks"][name]["metric"]), task_items(merged, name)
        scores["chance"] = chance_level(items)
        out[name] = {"scores": scores, "items": items, "counts": counts[name]}
        if cache:
            cache.counts["items_reused"] += counts[name]["items_reused"]
            cache.counts["items_scored"] += counts[name]["items_scored"]
    return out


def evaluate(subject, tasks: dict, settings: dict, ctx) -> dict | Outcome:
    """Run lm-eval on `tasks` for `subject` with the backend and model-side options in `settings`."""
    model_side = {k: settings.get(k) for k in ("backend", "device", "dtype", "max_length", "vllm")}
    cache = ctx.store.cache_dir() / "lm_eval"
    cache.mkdir(parents=True, exist_ok=True)
    cache_path = str(cache / request_cache_name(subject.fingerprint, fingerprint(model_side)))
    prepared = ctx.tasks()
    common = dict(task_folder=str(prepared.folder), include_builtin=prepared.needs_builtin_index,
                  cache_path=cache_path, seed=settings.get("seed", 0),
                  bootstrap_iters=settings.get("bootstrap_iters", 0))
    if settings["backend"] == "vllm":
        from bench.vllm.measure import run_accuracy

        return run_accuracy(subject, tasks, common, settings, ctx)
    from lm_eval.models.huggingface import HFLM

    from bench.shared_context_lm import SCORING_OPTIONS, SharedContextLM

    # hf-shared: HFLM with each shared token prefix run once (same scores, faster on multiple choice)
    lm_class = SharedContextLM if settings["backend"] == "hf-shared" else HFLM
    model, tokenizer = subject.model_and_tokenizer()
    lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=settings["batch_size"],
                  max_length=settings.get("max_length"), **SCORING_OPTIONS)
    return run_lm_eval(lm, tasks, **common)


def task_items(raw: dict, name: str) -> dict:
    """Per-item outcomes of a task; a group's items are its subtasks' items in subtask order, each
    doc_id prefixed by its subtask ("mmlu_anatomy/3"): the group's score weighs every item alike."""
    leaves = raw["subtasks"].get(name, [name])
    if leaves == [name]:
        return raw["items"][name]
    parts = [raw["items"][leaf] for leaf in leaves if leaf in raw["items"]]
    merged: dict = {"doc_id": [f"{leaf}/{d}" for leaf in leaves if leaf in raw["items"]
                               for d in raw["items"][leaf]["doc_id"]]}
    for key in parts[0]:
        if key != "doc_id" and all(key in part for part in parts):
            merged[key] = [x for part in parts for x in part[key]]
    return merged


def chance_level(items: dict) -> float | None:
    """The expected score of a uniform random guess: mean over items of 1 / number of choices."""
    choices = [c for c in items.get("n_choices", []) if c]
    return sum(1 / c for c in choices) / len(choices) if choices else None


def task_scores(raw: dict, name: str, metric: str) -> dict:
    result = raw["results"].get(name, {})
    leaves = raw["subtasks"].get(name, [name])
    return {
        "acc": result.get("acc,none"),
        "acc_stderr": result.get("acc_stderr,none"),
        "acc_norm": result.get("acc_norm,none"),
        "acc_norm_stderr": result.get("acc_norm_stderr,none"),
        "n": sum(raw["n"].get(leaf, 0) for leaf in leaves),
        "n_available": sum(raw.get("n_available", {}).get(leaf, 0) for leaf in leaves) or None,  # the data set's items
        "metric": metric,
        # a group's hash combines its subtasks' hashes
        "task_hash": raw["task_hashes"].get(name) if leaves == [name]
        else fingerprint({leaf: raw["task_hashes"].get(leaf) for leaf in leaves}),
        "subtasks": len(leaves) if leaves != [name] else None,
    }
