"""Synthetic run directories in the schema `laco bench` writes (helper-context: RUN DIRECTORY
SCHEMA), for the tests of claims, reports, compare and gate.

`write_run(path, models)` takes a compact description per model and writes run.json,
models/<key>.json and results/<key>/<measurement>.json. `python tests/run_fixtures.py` rewrites
the committed example run under tests/fixtures/runs/ (the golden report's input).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
TASKS = {"hellaswag": "acc_norm", "piqa": "acc_norm", "arc_easy": "acc", "winogrande": "acc", "boolq": "acc"}
N_ITEMS = 200
LIBRARIES = {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.23.0", "lm_eval": "0.4.13"}
DEVICE = {"device": "cpu", "torch_threads": 2, "cpu": "x86_64"}


def stderr(p: float, n: int = N_ITEMS) -> float:
    return math.sqrt(p * (1 - p) / (n - 1))


def accuracy_values(scores: dict[str, float], n: int = N_ITEMS) -> dict:
    tasks = {}
    for task, score in scores.items():
        metric = TASKS.get(task, "acc")
        other = "acc" if metric == "acc_norm" else "acc_norm"
        tasks[task] = {metric: score, f"{metric}_stderr": stderr(score, n), other: None, f"{other}_stderr": None,
                       "n": n, "metric": metric, "task_hash": f"hash-{task}"}
        if other == "acc":  # acc is always recorded, acc_norm only where the task has it
            tasks[task]["acc"] = round(score - 0.02, 4)
            tasks[task]["acc_stderr"] = stderr(score - 0.02, n)
    return {"lm_eval_version": "0.4.13", "tasks": tasks,
            "not_available": {"chid": "OpenCompass-only", "c3": "OpenCompass-only", "cmnli": "OpenCompass-only",
                              "xsum": "OpenCompass-only"}}


def laco_record(n_before: int, steps: list[tuple], T: float, seconds: float) -> dict:
    """A LaCo provenance record with a search trace: steps are (pointer, k, similarity, accepted)."""
    n, trace = n_before, []
    for pointer, k, sim, accepted in steps:
        n -= k if accepted else 0
        trace.append({"pointer": pointer, "k": k, "layers": list(range(pointer, pointer + k + 1)),
                      "similarity": sim, "accepted": accepted, "n_layers": n})
    return {"method": "laco", "config": {"C": 4, "L": 1, "H": n_before, "I": 2, "T": T, "merge": "reference"},
            "n_layers_before": n_before, "n_layers_after": n, "steps": trace, "search_seconds": seconds}


def model_record(method: str, ratio: float, seconds: float, extra: dict | None = None, *,
                 loader: str = "transformers", vllm: bool = True) -> dict:
    before = 134_515_008
    after = round(before * (1 - ratio))
    record = {
        "method": method, "source": {"model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "kind": "gguf"},
        "source_fingerprint": "src0123456789abc",
        "parameters": {"before": before, "after": after, "kept_ratio": after / before, "pruning_ratio": ratio},
        "prune_seconds": seconds, "loader": loader,
        "loadable": {"transformers": loader == "transformers", "vllm": vllm,
                     "reason": "standard config and tensor shapes" if vllm else "per-layer widths differ"},
        "fingerprint": f"fp-{method}",
    }
    record.update(extra or {})
    return record


def _result(key: str, fingerprint: str, name: str, values: dict | None, reason: str | None = None) -> dict:
    return {"model": key, "model_fingerprint": fingerprint, "measurement": name,
            "status": "ok" if reason is None else "n/a", "reason": reason, "settings": {"fixture": True},
            "settings_hash": "settings0", "values": values or {},
            "provenance": {"libraries": LIBRARIES, "device": DEVICE, "seed": 0, "git_commit": "0" * 40,
                           "started": "2025-01-01T00:00:00+00:00", "seconds": 1.0}}


def throughput(engine: str, median: float, spread: float = 0.05) -> dict:
    def stats(x: float) -> dict:
        return {"median": x, "min": round(x * (1 - spread), 3), "max": round(x * (1 + spread), 3)}

    return {"engine": engine, "batch_size": 4, "input_len": 64, "output_len": 32, "repeats": 3, "warmup": 1,
            "input_tokens_per_s": stats(median * 4), "output_tokens_per_s": stats(median),
            "total_tokens_per_s": stats(median * 3)}


def write_run(path: Path, models: dict[str, dict], *, profile: str = "smollm2-135m", finished: bool = True) -> Path:
    """models: {key: {"method", "record", "accuracy": {task: score}, "ppl", "param_mb", "peak_mb",
    "hf", "vllm" (tok/s, or a string: the n/a reason), "prune_s", "omit": [measurements],
    "stale": [measurements written for an older fingerprint]}}."""
    path.mkdir(parents=True, exist_ok=True)
    run = {"profile": {"name": profile, "model": {"spec": "smollm2-135m", "dtype": "float32", "device": "cpu"}},
           "profile_name": profile, "started": "2025-01-01T00:00:00+00:00",
           "finished": "2025-01-01T00:20:00+00:00" if finished else None, "git_commit": "0" * 40,
           "libraries": LIBRARIES, "device": DEVICE, "seed": 0, "data_dir": "/data"}
    _write(path / "run.json", run)
    for key, spec in models.items():
        method = spec.get("method", key)
        fp = f"fp-{key}"
        _write(path / "models" / f"{key}.json", {"key": key, "method": method, "fingerprint": fp,
                                                  "record": spec.get("record", {}), "saved": spec.get("saved")})
        results = {
            "accuracy": "accuracy" in spec and accuracy_values(spec["accuracy"]),
            "perplexity": "ppl" in spec and {"windows": {"ppl": spec["ppl"], "window": 512, "n_windows": 40,
                                                         "dataset": "wikitext-2 test"},
                                             "lm_eval_wikitext": {"word_perplexity": round(spec["ppl"] * 1.7, 2)}},
            "memory": "param_mb" in spec and {"param_mb": spec["param_mb"], "buffer_mb": 0.1,
                                              "peak_mb": spec.get("peak_mb"), "peak_kind": "subprocess_peak_rss"},
            "throughput_hf": "hf" in spec and throughput("hf", spec["hf"]),
            "pruning_time": "prune_s" in spec and {"seconds": spec["prune_s"]},
        }
        for name, values in results.items():
            if values and name not in spec.get("omit", ()):
                stale = name in spec.get("stale", ())
                doc = _result(key, "fp-older" if stale else fp, name, values)
                _write(path / "results" / key / f"{name}.json", doc)
        vllm = spec.get("vllm")
        if isinstance(vllm, str):
            _write(path / "results" / key / "throughput_vllm.json", _result(key, fp, "throughput_vllm", None, vllm))
        elif vllm is not None:
            _write(path / "results" / key / "throughput_vllm.json",
                   _result(key, fp, "throughput_vllm", throughput("vllm", vllm)))
    return path


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# --- ready-made runs ------------------------------------------------------------------------------

DENSE_SCORES = {"hellaswag": 0.43, "piqa": 0.68, "arc_easy": 0.58, "winogrande": 0.53, "boolq": 0.60}
LACO_STEPS = [(26, 3, 0.93, True), (24, 3, 0.71, True), (22, 3, 0.58, False), (21, 3, 0.66, True),
              (19, 3, 0.52, False), (18, 3, 0.49, False), (17, 3, 0.55, False)]


def good_models() -> dict[str, dict]:
    """A run where LaCo meets every claim: it keeps >80% and beats every baseline."""
    laco_rec = model_record("laco", 0.27, 4.1, laco_record(30, LACO_STEPS, 0.65, 4.1))
    return {
        "dense": {"method": "dense", "accuracy": DENSE_SCORES, "ppl": 18.2, "param_mb": 513.1, "peak_mb": 1290.0,
                  "hf": 40.0, "vllm": 210.0},
        "laco": {"record": laco_rec, "saved": "runs/x/models/laco", "accuracy": {
            "hellaswag": 0.38, "piqa": 0.63, "arc_easy": 0.47, "winogrande": 0.52, "boolq": 0.58},
                 "ppl": 31.5, "param_mb": 374.6, "peak_mb": 1010.0, "hf": 52.0, "vllm": 265.0, "prune_s": 4.1},
        "llm-pruner": {"record": model_record("llm-pruner", 0.26, 21.0, loader="laco.baselines.llm_pruner:load",
                                              vllm=False),
                       "accuracy": {"hellaswag": 0.33, "piqa": 0.60, "arc_easy": 0.41, "winogrande": 0.51,
                                    "boolq": 0.55},
                       "ppl": 44.0, "param_mb": 380.0, "peak_mb": 1040.0, "hf": 45.0,
                       "vllm": "per-layer widths differ: vLLM needs one width", "prune_s": 21.0},
        "slicegpt": {"record": model_record("slicegpt", 0.25, 35.0, {"calibration_warning": "210 calibration tokens "
                                            "for bases of 404 directions"}, loader="laco.baselines.slicegpt:load",
                                            vllm=False),
                     "accuracy": {"hellaswag": 0.31, "piqa": 0.58, "arc_easy": 0.40, "winogrande": 0.50,
                                  "boolq": 0.52},
                     "ppl": 52.0, "param_mb": 385.0, "peak_mb": 1060.0, "hf": 41.0,
                     "vllm": "rotated residual stream: not a stock architecture", "prune_s": 35.0},
        "drop": {"record": model_record("drop", 0.27, 3.0), "accuracy": {
            "hellaswag": 0.33, "piqa": 0.59, "arc_easy": 0.40, "winogrande": 0.51, "boolq": 0.50},
                 "ppl": 60.0, "param_mb": 374.6, "peak_mb": 1005.0, "hf": 52.5, "prune_s": 3.0},
        "rule-based": {"record": model_record("rule-based", 0.27, 0.5), "accuracy": {
            "hellaswag": 0.34, "piqa": 0.60, "arc_easy": 0.42, "winogrande": 0.50, "boolq": 0.54},
                       "ppl": 48.0, "param_mb": 374.6, "peak_mb": 1008.0, "hf": 52.2, "prune_s": 0.5},
    }


def example_models() -> dict[str, dict]:
    """The committed example: mostly good, with one failure, one n/a engine, one missing and one
    stale measurement, so the report shows every verdict."""
    models = good_models()
    models["laco"]["accuracy"] = {"hellaswag": 0.36, "piqa": 0.62, "arc_easy": 0.45, "winogrande": 0.52,
                                  "boolq": 0.40}
    models["rule-based"]["accuracy"]["boolq"] = 0.60  # rule-based merging beats the search here
    models["drop"]["stale"] = ["perplexity"]
    del models["slicegpt"]["prune_s"]
    return models


if __name__ == "__main__":
    target = FIXTURES / "example-smollm2"
    if target.exists() and "--force" not in sys.argv:
        sys.exit(f"{target} exists; pass --force to rewrite it (the golden report changes with it)")
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    print(write_run(target, example_models()))
