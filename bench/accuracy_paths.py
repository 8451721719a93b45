"""Accuracy paths side by side: the same lm-eval requests scored by several HF backends in one run.

    python -m bench.accuracy_paths --model smollm2-135m --tasks hellaswag,piqa,mmlu --limit 40 \\
        --mmlu-limit 1 --backends hf,hf-shared --data-dir ../shared/data --out paths.json

Each task's requests are built once (lm-eval's own task objects, zero-shot, the first N items
as lm-eval's --limit takes them) and handed to every backend's `loglikelihood` in turn; per
backend it records wall and process-CPU seconds, the tokens fed to the model and, per item, the log-likelihood of every
choice and lm-eval's acc / acc_norm (`Task.process_results`). With two or more backends, the
first is the reference: per-request differences, the share of items with the same choice, and
every item whose choice differs with the reference's gap between its two best choices (a
near-tie shows as a small gap). Backends: "hf" (lm-eval's HFLM), "hf-shared"
(`bench.shared_context_lm`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from laco import atomic

BACKENDS = ("hf", "hf-shared")


def make_lm(backend: str, model, tokenizer, batch_size: int, max_length: int):
    from lm_eval.models.huggingface import HFLM

    from bench.shared_context_lm import SCORING_OPTIONS, SharedContextLM

    cls = {"hf": HFLM, "hf-shared": SharedContextLM}[backend]
    return cls(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length, device="cpu",
               **SCORING_OPTIONS)


def task_requests(names: list[str], limits: dict[str, int], data_dir, folder) -> dict[str, list]:
    """{task: [(leaf task object, [instances of one leaf])]} with the first `limits[task]` items per leaf."""
    from lm_eval.tasks import TaskManager

    from bench.tasks import prepare_tasks

    prepared = prepare_tasks(names, data_dir, folder)
    if prepared.not_available.keys() & set(names):
        raise SystemExit(f"not available: { {k: prepared.not_available[k] for k in names if k in prepared.not_available} }")
    manager = TaskManager(include_defaults=False, include_path=str(prepared.folder))
    out = {}
    for name in names:
        leaves = manager.load([name])["tasks"]
        out[name] = []
        for leaf_name, leaf in sorted(leaves.items()):
            leaf.set_config(key="num_fewshot", value=0)
            leaf.build_all_requests(limit=limits[name], rank=0, world_size=1)
            out[name].append((leaf_name, leaf, list(leaf.instances)))
    return out


def score(lm, instances) -> tuple[list, float, float, int]:
    """Answers, wall and process-CPU seconds, and the tokens the model was fed (padding included)."""
    fed = []
    hook = lm.model.get_input_embeddings().register_forward_hook(lambda module, args, out: fed.append(args[0].numel()))
    wall, cpu = time.perf_counter(), time.process_time()
    try:
        answers = lm.loglikelihood(instances, disable_tqdm=True)
    finally:
        hook.remove()
    return answers, time.perf_counter() - wall, time.process_time() - cpu, sum(fed)


def items_of(leaf, instances, answers) -> list[dict]:
    """Per item: choices' log-likelihoods, greedy flags and lengths in characters, lm-eval's acc and acc_norm."""
    by_doc: dict[int, list] = {}
    for inst, answer in zip(instances, answers, strict=True):
        by_doc.setdefault(inst.doc_id, []).append((inst.idx, inst.doc, answer))
    items = []
    for doc_id, entries in sorted(by_doc.items()):
        entries.sort(key=lambda e: e[0])
        results = [e[2] for e in entries]
        metrics = leaf.process_results(entries[0][1], results)
        items.append({"doc_id": doc_id, "n_choices": len(results), "ll": [float(r[0]) for r in results],
                      "chars": [len(c) for c in leaf.doc_to_choice(entries[0][1])],  # what acc_norm divides by
                      "greedy": [bool(r[1]) for r in results],
                      "acc": float(metrics["acc"]), "acc_norm": float(metrics.get("acc_norm", metrics["acc"]))})
    return items


def choices(item: dict) -> tuple[int, int]:
    """The choices acc and acc_norm take: argmax of log-likelihood, and of it per character of
    the choice's text (lm-eval's acc_norm)."""
    n = range(len(item["ll"]))
    return (max(n, key=lambda j: item["ll"][j]), max(n, key=lambda j: item["ll"][j] / item["chars"][j]))


def compare(reference: list[dict], other: list[dict]) -> dict:
    """Per-request max |difference|, share of items where both acc's and acc_norm's choices agree,
    and the items that differ with the reference's gap between its two best choices."""
    diffs, differing, same = [], [], 0
    for a, b in zip(reference, other, strict=True):
        assert a["doc_id"] == b["doc_id"] and a["task"] == b["task"]
        diffs.extend(abs(x - y) for x, y in zip(a["ll"], b["ll"], strict=True))
        agree = choices(a) == choices(b)
        same += agree
        if not agree:
            top = sorted(a["ll"], reverse=True)
            differing.append({"task": a["task"], "doc_id": a["doc_id"], "ll_reference": a["ll"], "ll_other": b["ll"],
                              "reference_top2_gap": top[0] - top[1] if len(top) > 1 else None})
    return {"max_abs_ll_diff": max(diffs, default=0.0), "requests": len(diffs), "items": len(reference),
            "same_choice_share": same / len(reference) if reference else None, "differing_items": differing}


def run(args) -> dict:
    import torch

    from laco.loading import load_model
    from laco.pruners import load_pruned

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pruned:
        model, tokenizer, _ = load_pruned(args.pruned)
    else:
        loaded = load_model(args.model)
        model, tokenizer = loaded.model, loaded.tokenizer
    names = args.tasks.split(",")
    limits = {n: (args.mmlu_limit if n == "mmlu" else args.limit) for n in names}
    limits.update({k: int(v) for k, v in (pair.split("=") for pair in args.task_limits.split(",") if pair)})
    requests = task_requests(names, limits, args.data_dir, Path(args.workdir) / "lm_eval_tasks")
    lms = {b: make_lm(b, model, tokenizer, args.batch_size, args.max_length) for b in args.backends.split(",")}
    out = {"model": args.pruned or args.model, "batch_size": args.batch_size, "max_length": args.max_length,
           "threads": torch.get_num_threads(), "limits": limits, "tasks": {}}
    for t, name in enumerate(names):
        instances = [inst for _, _, insts in requests[name] for inst in insts]
        order = list(lms) if t % 2 == 0 else list(reversed(lms))  # alternate who runs first against drift
        per_backend = {}
        for backend in order:
            answers, wall, cpu, fed = score(lms[backend], instances)
            items, k = [], 0
            for leaf_name, leaf, insts in requests[name]:
                leaf_items = items_of(leaf, insts, answers[k:k + len(insts)])
                k += len(insts)
                items.extend({"task": leaf_name, **item} for item in leaf_items)
            per_backend[backend] = {"wall_s": wall, "cpu_s": cpu, "requests": len(instances), "fed_tokens": fed,
                                    "requests_per_s": len(instances) / wall, "items": items}
            print(f"{name:16s} {backend:10s} {len(instances):5d} requests {fed:7d} tokens {wall:8.1f} s wall "
                  f"{cpu:8.1f} s cpu {len(instances) / wall:7.2f} req/s", file=sys.stderr, flush=True)
        entry = {"backends": per_backend}
        backends = list(lms)
        for other in backends[1:]:
            entry[f"{other}_vs_{backends[0]}"] = compare(per_backend[backends[0]]["items"], per_backend[other]["items"])
        out["tasks"][name] = entry
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m", help="model spec for laco.loading.load_model")
    parser.add_argument("--pruned", help="a pruned output folder (laco.pruners.load_pruned) instead of --model")
    parser.add_argument("--tasks", required=True, help="comma-separated task names of bench/tasks.toml")
    parser.add_argument("--limit", type=int, default=40, help="items per task")
    parser.add_argument("--mmlu-limit", type=int, default=1, help="items per MMLU subject")
    parser.add_argument("--task-limits", default="", help="per-task overrides, e.g. race=60,boolq=100")
    parser.add_argument("--backends", default="hf,hf-shared", help=f"comma-separated, first = reference; of {BACKENDS}")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--data-dir", default=os.environ.get("LACO_DATA_DIR"))
    parser.add_argument("--workdir", default=".", help="where the generated task YAMLs go")
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args(argv)
    atomic.write_text(args.out, json.dumps(run(args), indent=1))


if __name__ == "__main__":
    main()
