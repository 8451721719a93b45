"""Accuracy: lm-eval's own tasks and scoring on the model under measurement.

Backend `hf` wraps the in-memory model in lm-eval's HFLM with its tokenizer passed explicitly;
backend `vllm` runs lm-eval's vllm backend (tensor_parallel_size from the profile) in the vLLM
environment on the saved weights. Both go through `bench.lm_eval_run` on the same generated
task folder, and both keep a request cache of their own per model (see `request_cache_name`).
"""

from __future__ import annotations

from importlib import metadata

from bench.lm_eval_run import request_cache_name, run_lm_eval
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
    raw = evaluate(subject, settings["tasks"], settings, ctx)
    if isinstance(raw, Outcome):
        return raw
    values = {"lm_eval_version": settings["lm_eval"], "tasks": {}, "not_available": dict(settings["not_available"]),
              # the paper's benchmarks lm-eval has but this profile leaves out (for time, say)
              "not_in_profile": {b: t for b, t in PAPER_BENCHMARKS.items()
                                 if t and t not in settings["tasks"] and t not in settings["not_available"]}}
    values["items"], values["notes"] = {}, dict(settings.get("notes") or {})
    for name, opts in settings["tasks"].items():
        values["tasks"][name] = task_scores(raw, name, opts["metric"])
        values["items"][name] = task_items(raw, name)
        values["tasks"][name]["chance"] = chance_level(values["items"][name])
    return Outcome("ok", None, values)


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
