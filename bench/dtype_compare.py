"""The cost of measuring a profile in another dtype (bfloat16 against float32), item by item.

    python -m bench.dtype_compare --profile smollm2-135m --method laco-27 --data-dir ../shared/data \\
        --work runs/dtype-compare --out runs/dtype-compare/compare.json [--limit 150 --windows 8]

In each dtype (the first of --dtypes is the reference) the dense model and the profile's method entry,
pruned in that dtype as the bench prunes it (`bench.pruned`, in a scratch run folder under --work:
a bf16 run prunes from bf16 hidden states, and may merge other layers; whatever the profile's
`[model] prune_dtype`), are scored on the profile's accuracy items and perplexity windows, and so is
the reference dtype's prune loaded in the other dtypes (what a profile with `prune_dtype = "float32"`
measures in bf16). An entry that reads another's model (`target = "match:LABEL"`, as llm-pruner-uniform
matches laco-27's ratio, or `source`) has that one pruned first in each dtype, as a run does:
- accuracy: lm-eval's requests of the profile's tasks and item limits, built once and scored by the
  profile's backend, batch size and context (`bench.accuracy_paths`), keeping the log-likelihood of
  every choice of every item and the task's metric per item;
- perplexity: the profile's windows (`bench.perplexity.window_perplexity`), the NLL of each.
--limit N takes the first N items of each task and --windows N the first N windows (never more than
the profile's): a shorter comparison on a subset of the same items.
Per model, each dtype against the reference: the largest and median |Δ log-likelihood| over every
choice of every item, the share of items where the task's metric picks the same choice, the paired
difference in accuracy (suites.statistics: items resampled within tasks) and the perplexity ratio per
window with the paired ratio over windows. The prunes are compared (the layers merged, T), and the
claims that need only dense and the method's model are judged in each dtype (`suites`): a verdict
that moves is listed. The prunes and scores are kept under --work and reused by a second call while
the model (its weights digest) and the profile's settings are the same, whatever the code: after a
change to how models are scored, give a fresh --work.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from laco import LacoError, atomic

DTYPES = ("float32", "bfloat16", "float16")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dtype_compare", description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="smollm2-135m", help="a shipped profile name or a .toml file")
    parser.add_argument("--method", default="laco-27", help="the label of the profile's method entry to prune")
    parser.add_argument("--dtypes", default="float32,bfloat16", help="comma-separated; the first is the reference")
    parser.add_argument("--data-dir", default=os.environ.get("LACO_DATA_DIR"))
    parser.add_argument("--work", required=True, help="folder for the prunes and the scores (reused when run again)")
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--limit", type=int, help="the first N items of each task (at most the profile's limit)")
    parser.add_argument("--windows", type=int, help="the first N perplexity windows (at most the profile's)")
    args = parser.parse_args(argv)
    try:
        doc = compare_dtypes(args.profile, args.method, args.dtypes.split(","), args.data_dir, Path(args.work),
                             args.limit, args.windows)
    except LacoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    atomic.write_json(args.out, doc)
    print(markdown(doc))
    return 0


def compare_dtypes(profile_name: str, label: str, dtypes: list[str], data_dir: str | None, work: Path,
                   limit: int | None = None, windows: int | None = None) -> dict:
    from bench.accuracy_paths import task_requests
    from bench.perplexity import wikitext_test
    from bench.profile import load_profile
    from laco.provenance import bf16_matmul

    name, profile = load_profile(profile_name)
    method = method_entry(profile, label, dtypes)
    shorten(profile, limit, windows)
    limits = {task: opts.limit for task, opts in profile.accuracy.tasks.items()}
    requests = task_requests(list(limits), limits, data_dir, work / "lm_eval_tasks")
    text = wikitext_test(perplexity_source(data_dir))
    begun = time.perf_counter()
    runs = [DtypeRun(profile, method, dtype, work / f"{i}-{dtype}", data_dir) for i, dtype in enumerate(dtypes)]
    models = {}
    for key in ("dense", label):  # both dtypes of one model back to back: the machine's drift hits both alike
        models[key] = [run.scores(key, requests, text) for run in runs]
    # the reference dtype's prune measured in the other dtypes: the cost of the arithmetic alone
    cast = f"{label}.{dtypes[0]}-pruned"
    models[cast] = [models[label][0], *[run.scores(cast, requests, text, runs[0]) for run in runs[1:]]]
    doc = {"profile": name, "method": label, "dtypes": dtypes, "bf16_matmul": bf16_matmul(),
           "accuracy": {"backend": profile.accuracy.backend, "batch_size": profile.accuracy.batch_size,
                        "max_length": profile.accuracy.max_length, "limits": limits},
           "perplexity": {"window": profile.perplexity.window, "n_windows": profile.perplexity.n_windows},
           "ll_differences_over": "every choice of every item",
           "prunes": compare_prunes(runs), "scores": models, "seconds": time.perf_counter() - begun}
    doc["comparisons"] = {key: [compare_scores(per_dtype[0], other) for other in per_dtype[1:]]
                          for key, per_dtype in models.items()}
    doc["verdicts"] = verdicts_by_dtype(name, label, cast, runs, models)
    return doc


def method_entry(profile, label: str, dtypes: list[str]):
    method = next((m for m in profile.methods if m.label == label), None)
    if method is None:
        raise LacoError(f"the profile has no method entry {label!r} (it has {', '.join(m.label for m in profile.methods)})")
    unknown = [d for d in dtypes if d not in DTYPES]
    if unknown or len(dtypes) < 2:
        raise LacoError(f"--dtypes: two or more of {', '.join(DTYPES)}, got {','.join(dtypes)}")
    return method


def prerequisites(profile, method) -> list:
    """The entries a run prunes before `method` because it reads their models: the one whose parameter
    ratio its target matches ("match:LABEL") and the one it prunes further (`source`), theirs first."""
    by_label = {m.label: m for m in profile.methods}
    named = [method.matches, method.source]
    entries = []
    for label in filter(None, named):
        for entry in [*prerequisites(profile, by_label[label]), by_label[label]]:
            if entry.label not in [e.label for e in entries]:
                entries.append(entry)
    return entries


def shorten(profile, limit: int | None, windows: int | None) -> None:
    """--limit / --windows: the first N items of each task, the first N windows (never more than the profile's)."""
    if (limit is not None and limit < 1) or (windows is not None and windows < 1):
        raise LacoError(f"--limit and --windows take a positive count, got {limit}, {windows}")
    for task in profile.accuracy.tasks.values():
        task.limit = min(filter(None, [limit, task.limit]), default=None)
    if windows is not None:
        profile.perplexity.n_windows = min(filter(None, [windows, profile.perplexity.n_windows]))


def perplexity_source(data_dir: str | None) -> str:
    from bench.perplexity import HUB_SOURCE, RAW_FILE

    return str(Path(data_dir) / RAW_FILE) if data_dir else HUB_SOURCE


class DtypeRun:
    """The dense model and the pruned one in one dtype: a scratch run folder of the bench (`bench.pruned`
    prunes and saves there as in a run), and the scores of each model kept beside."""

    def __init__(self, profile, method, dtype: str, folder: Path, data_dir: str | None):
        from bench.context import RunContext
        from bench.store import RunStore

        own = profile.model_copy(deep=True)
        own.model.dtype, own.model.prune_dtype = dtype, "same"  # each dtype prunes in itself: the cost of a bf16 search
        self.dtype, self.method, self.folder = dtype, method, folder
        self.ctx = RunContext(own, RunStore(folder, reuse_other_code=True), data_dir, progress=False)
        self.subjects: dict = {}
        self.prune_seconds: float | None = None

    def subject(self, key: str, reference: DtypeRun | None = None):
        if key not in self.subjects:
            self.subjects[key] = (self.dense() if key == "dense" else self.pruned() if key == self.method.label
                                  else self.cast(key, reference.subject(self.method.label)))
        return self.subjects[key]

    def dense(self):
        from bench.runner import dense_fingerprint
        from bench.subject import Subject
        from laco.loading import resolve

        m = self.ctx.profile.model
        source = resolve(m.spec, revision=m.revision)
        return Subject("dense", "dense", dense_fingerprint(source.fingerprint(), m.dtype), {}, self.ctx.dense_load_args())

    def pruned(self):
        from bench.pruned import pruned_subject

        dense_fp = self.subject("dense").fingerprint
        for entry in prerequisites(self.ctx.profile, self.method):  # pruned in this dtype too, as a run prunes them
            pruned_subject(entry, self.ctx, dense_fp).release()
        started = time.perf_counter()
        subject = pruned_subject(self.method, self.ctx, dense_fp)
        self.prune_seconds = time.perf_counter() - started
        return subject

    def cast(self, key: str, pruned):
        """Another dtype's pruned model (its saved weights) loaded in this dtype."""
        from bench.subject import Subject
        from laco.provenance import fingerprint

        identity = fingerprint({"pruned": pruned.fingerprint, "dtype": self.dtype})
        return Subject(key, pruned.method, identity, pruned.record, self.ctx.pruned_load_args(Path(pruned.folder)))

    def scores(self, key: str, requests: dict, text: str, reference: DtypeRun | None = None) -> dict:
        """The model's items and windows in this dtype: kept under the folder, scored when not there yet."""
        from bench.store import read_json, settings_hash

        subject = self.subject(key, reference)
        p = self.ctx.profile
        identity = settings_hash({"model": subject.fingerprint, "accuracy": p.accuracy.model_dump(),
                                  "perplexity": p.perplexity.model_dump()})
        path = self.folder / "scores" / f"{key}.json"
        kept = read_json(path)
        if kept and kept.get("identity") == identity:
            return kept
        model, tokenizer = subject.model_and_tokenizer()
        doc = {"identity": identity, "model": key, "dtype": self.dtype, "fingerprint": subject.fingerprint,
               "torch_dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
               **score_items(model, tokenizer, requests, p), **score_windows(model, tokenizer, text, p)}
        subject.release()
        atomic.write_json(path, doc, compact=True)
        return doc


def score_items(model, tokenizer, requests: dict, profile) -> dict:
    """Every choice's log-likelihood and the task metric's outcome per item, with the wall time."""
    from bench.accuracy_paths import items_of, make_lm, score

    acc = profile.accuracy
    lm = make_lm(acc.backend, model, tokenizer, acc.batch_size, acc.max_length)
    tasks, seconds = {}, 0.0
    for task, leaves in requests.items():
        metric = acc.tasks[task].metric or task_metric(task)
        instances = [inst for _, _, insts in leaves for inst in insts]
        answers, wall, _, _ = score(lm, instances)
        seconds += wall
        items, k = [], 0
        for leaf_name, leaf, insts in leaves:
            for item in items_of(leaf, insts, answers[k:k + len(insts)]):
                doc_id = item["doc_id"] if leaf_name == task else f"{leaf_name}/{item['doc_id']}"
                items.append({**item, "doc_id": doc_id, "correct": item[metric]})
            k += len(insts)
        tasks[task] = {"metric": metric, "items": items}
    return {"tasks": tasks, "accuracy_seconds": seconds}


def task_metric(task: str) -> str:
    from bench.tasks import default_metric

    return default_metric(task)


def score_windows(model, tokenizer, text: str, profile) -> dict:
    from bench.perplexity import window_perplexity

    p = profile.perplexity
    started = time.perf_counter()
    windows = window_perplexity(model, tokenizer, text, p.window, p.n_windows, p.batch_size)
    return {"windows": windows, "perplexity_seconds": time.perf_counter() - started}


def choice(item: dict, metric: str) -> int:
    """The choice the task's metric takes: acc the highest log-likelihood, acc_norm per character."""
    from bench.accuracy_paths import choices

    by_ll, by_char = choices(item)
    return by_char if metric == "acc_norm" else by_ll


def compare_scores(reference: dict, other: dict) -> dict:
    """One model in another dtype against the reference dtype: per task and over all items."""
    from suites import statistics as st

    diffs, per_task, paired = [], {}, {}
    for task, ref in reference["tasks"].items():
        items = other["tasks"][task]["items"]
        if [i["doc_id"] for i in items] != [i["doc_id"] for i in ref["items"]]:
            raise LacoError(f"{task}: the two dtypes were scored on different items")
        task_diffs = [abs(a - b) for x, y in zip(ref["items"], items) for a, b in zip(x["ll"], y["ll"], strict=True)]
        same = [choice(x, ref["metric"]) == choice(y, ref["metric"]) for x, y in zip(ref["items"], items)]
        paired[task] = {"reference": [i["correct"] for i in ref["items"]], "other": [i["correct"] for i in items]}
        per_task[task] = {"items": len(same), "same_choice": sum(same) / len(same), "max_abs_ll_diff": max(task_diffs),
                          "median_abs_ll_diff": statistics.median(task_diffs),
                          "accuracy": [mean(paired[task]["reference"]), mean(paired[task]["other"])]}
        diffs += task_diffs
    difference = st.bootstrap_tasks(paired, lambda m: st.task_average(m, "other") - st.task_average(m, "reference"))
    same_all = sum(t["same_choice"] * t["items"] for t in per_task.values()) / sum(t["items"] for t in per_task.values())
    return {"dtype": other["dtype"], "reference": reference["dtype"], "tasks": per_task, "same_choice": same_all,
            "max_abs_ll_diff": max(diffs), "median_abs_ll_diff": statistics.median(diffs),
            "accuracy_difference": interval_dict(difference), "perplexity": compare_windows(reference, other),
            "accuracy_seconds": [reference["accuracy_seconds"], other["accuracy_seconds"]],
            "perplexity_seconds": [reference["perplexity_seconds"], other["perplexity_seconds"]]}


def compare_windows(reference: dict, other: dict) -> dict:
    """PPL ratio other / reference per window, and over all windows paired (suites.statistics)."""
    import math

    from suites import statistics as st

    a, b = reference["windows"], other["windows"]
    tokens = a["tokens_per_window"]
    ratios = [math.exp((y - x) / tokens) for x, y in zip(a["nll"], b["nll"], strict=True)]
    overall = st.perplexity_ratio(b["nll"], a["nll"], tokens)
    return {"ppl": [a["ppl"], b["ppl"]], "windows": len(ratios), "per_window_ratio": ratios,
            "min": min(ratios), "median": statistics.median(ratios), "max": max(ratios), "ratio": interval_dict(overall)}


def compare_prunes(runs: list[DtypeRun]) -> dict:
    """What each dtype's prune chose: the layers merged (as original indices), T, the ratio; and whether
    the prunes agree."""
    chosen = []
    for run in runs:
        record = run.subject(run.method.label).record
        chosen.append({"dtype": run.dtype, "layer_sources": record.get("layer_sources"),
                       "T": (record.get("config") or {}).get("T"), "layers": record.get("n_layers_after"),
                       "pruning_ratio": record["parameters"]["pruning_ratio"],
                       "prune_seconds": record.get("prune_seconds")})
    same = (None if all(c["layer_sources"] is None for c in chosen)  # a width prune (LLM-Pruner, SliceGPT): no layers
            else all(c["layer_sources"] == chosen[0]["layer_sources"] for c in chosen))
    return {"per_dtype": chosen, "same_layers": same}


def verdicts_by_dtype(name: str, label: str, cast: str, runs: list[DtypeRun], models: dict) -> dict:
    """The claims on `label` that dense and `label` alone decide (suites.verdicts), judged in each dtype
    and, in the other dtypes, on the reference dtype's prune too; `moved`: those whose verdict differs.
    A claim that needs another model (a baseline) or a measurement made here (memory, speed) is left out."""
    from suites.claims import load_claims
    from suites.outcomes import NOT_MEASURED
    from suites.verdicts import Judge

    variants = [(run.dtype, run, models[label][i], label) for i, run in enumerate(runs)]
    variants += [(f"{run.dtype}, {runs[0].dtype} prune", run, models[cast][i], cast) for i, run in enumerate(runs) if i]
    claims, statuses = load_claims(), {}
    for variant, run, pruned, key in variants:
        subjects = {"dense": (run.subject("dense"), models["dense"][runs.index(run)]), label: (run.subject(key), pruned)}
        for v in Judge(suites_run(name, label, run, subjects), claims).all():
            if v.subject == label:
                statuses.setdefault(v.claim.id, []).append({"variant": variant, "status": v.status,
                                                            "ours": "; ".join(r.ours for r in v.rows)})
    judged = {c: s for c, s in statuses.items() if all(v["status"] != NOT_MEASURED for v in s)}
    moved = [c for c, s in judged.items() if len({v["status"] for v in s}) > 1]
    return {"variants": [v[0] for v in variants], "judged": judged, "moved": moved}


def suites_run(name: str, label: str, run: DtypeRun, subjects: dict):
    """Dense and `label` of one dtype as the suites read a run (accuracy items and perplexity windows only);
    `subjects`: {key: (subject, scores)}."""
    from suites.evidence import Measurement, Model, Run

    models, results = {}, {}
    for key, (subject, doc) in subjects.items():
        models[key] = Model(key, subject.method, subject.fingerprint, subject.record, None,
                            point=run.method.point if key == label else "dense")
        tasks = {t: {"metric": d["metric"]} for t, d in doc["tasks"].items()}
        items = {t: {"doc_id": [i["doc_id"] for i in d["items"]], d["metric"]: [int(i["correct"]) for i in d["items"]],
                     "n_choices": [i["n_choices"] for i in d["items"]]} for t, d in doc["tasks"].items()}
        results[key] = {"accuracy": Measurement(key, "accuracy", "ok", None, {"tasks": tasks, "items": items}, {}, {}),
                        "perplexity": Measurement(key, "perplexity", "ok", None, {"windows": doc["windows"]}, {}, {})}
    meta = {"profile": run.ctx.profile.model_dump(), "profile_name": name}
    return Run(run.folder, meta, models, results)


def mean(values: list) -> float:
    return sum(values) / len(values)


def interval_dict(interval) -> dict:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high, "method": interval.method}


def markdown(doc: dict) -> str:
    """The comparison as markdown tables: per model and task, then the prunes and the verdicts."""
    from suites.markdown import table

    rows = []
    for key, comparisons in doc["comparisons"].items():
        for c in comparisons:
            for task, t in c["tasks"].items():
                rows.append([key, f"{c['dtype']} vs {c['reference']}", task, t["items"], f"{t['same_choice']:.2%}",
                             f"{t['max_abs_ll_diff']:.3f}", f"{t['median_abs_ll_diff']:.4f}",
                             f"{100 * t['accuracy'][0]:.1f} → {100 * t['accuracy'][1]:.1f}", "", ""])
            d, p = c["accuracy_difference"], c["perplexity"]
            rows.append([f"**{key}**", f"{c['dtype']} vs {c['reference']}", "all", sum(t["items"] for t in c["tasks"].values()),
                         f"{c['same_choice']:.2%}", f"{c['max_abs_ll_diff']:.3f}", f"{c['median_abs_ll_diff']:.4f}",
                         f"{100 * d['estimate']:+.2f} [{100 * d['low']:+.2f}, {100 * d['high']:+.2f}] pt",
                         f"{p['ppl'][0]:.2f} → {p['ppl'][1]:.2f}: ×{p['ratio']['estimate']:.4f} "
                         f"[{p['ratio']['low']:.4f}, {p['ratio']['high']:.4f}]",
                         f"{p['min']:.4f} / {p['median']:.4f} / {p['max']:.4f}"])
    head = ["model", "dtypes", "task", "items", "same choice", "max |Δll|", "median |Δll|",
            "accuracy (task: ref → other; all: paired Δ [95%])", "PPL ratio [95%] (paired windows)",
            "per-window ratio min / median / max"]
    items = ", ".join(f"{task} {n if n else 'all'}" for task, n in doc["accuracy"]["limits"].items())
    windows = f"{doc['perplexity']['n_windows']} windows of {doc['perplexity']['window']} tokens"
    return "\n\n".join([f"dtype comparison: profile {doc['profile']}, {doc['method']}; CPU bf16 matmul: "
                        f"{doc['bf16_matmul'] or 'none'}; the first items of each task ({items}), the first {windows}; "
                        f"|Δll| over {doc['ll_differences_over']}",
                        table(rows, head), prunes_table(doc), times_table(doc), verdicts_table(doc)])


def prunes_table(doc: dict) -> str:
    from suites.markdown import table

    prunes = doc["prunes"]
    rows = [[p["dtype"], "-" if p["layers"] is None else p["layers"], f"{p['pruning_ratio']:.1%}",
             f"{p['T']:.4f}" if p["T"] is not None else "-",
             " ".join("+".join(map(str, s)) for s in p["layer_sources"] if len(s) > 1) if p["layer_sources"] else "-"]
            for p in prunes["per_dtype"]]
    same = {True: "the same layers", False: "DIFFERENT layers",
            None: "a width prune: no layers to compare"}[prunes["same_layers"]]
    return f"Prunes of {doc['method']} ({same}):\n\n" + table(rows, ["dtype", "layers kept", "pruned", "T", "merged groups"])


def times_table(doc: dict) -> str:
    from suites.markdown import table

    prunes = {p["dtype"]: p["prune_seconds"] for p in doc["prunes"]["per_dtype"]}
    rows = []
    for key, per_dtype in doc["scores"].items():
        for s in (s for s in per_dtype if s["model"] == key):  # the reference's own prune is listed once
            prune = f"{prunes[s['dtype']]:.1f}" if key == doc["method"] and prunes[s["dtype"]] is not None else "-"
            rows.append([key, s["dtype"], f"{s['accuracy_seconds']:.0f}", f"{s['perplexity_seconds']:.1f}", prune])
    return ("Wall seconds, each where it was measured (a second call reuses them):\n\n"
            + table(rows, ["model", "dtype", "accuracy s", "perplexity s", "pruning step s"]))


def verdicts_table(doc: dict) -> str:
    from suites.markdown import table

    judged = doc["verdicts"]["judged"]
    rows = [[claim, *[f"{v['status']}: {v['ours']}" for v in per_variant]] for claim, per_variant in judged.items()]
    moved = ", ".join(doc["verdicts"]["moved"]) or "none"
    return (f"Verdicts on {doc['method']} that dense and {doc['method']} decide (verdicts that move: {moved}):\n\n"
            + table(rows, ["claim", *doc["verdicts"]["variants"]]))


if __name__ == "__main__":
    sys.exit(main())
