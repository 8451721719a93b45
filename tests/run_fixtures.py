"""Synthetic run directories in the schema `laco bench` writes, for the tests of claims, reports,
compare and gate.

`write_run(path, models)` takes a compact description per model and writes run.json,
models/<key>.json and results/<key>/<measurement>.json, with the evidence the suites pair:
per-item outcomes (each task's items share a difficulty across models, so models agree on easy and
hard items as real models do, and every model's score is exactly the one given), per-window NLL
(exactly the given perplexity), interleaved throughput rounds (a drift shared by every model of a
round), FLOPs and repeated pruning timings. `python tests/run_fixtures.py --force` rewrites the
committed example run under tests/fixtures/runs/ (the golden report's input).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "runs"
TASKS = {"hellaswag": ("acc_norm", 4), "piqa": ("acc_norm", 2), "arc_easy": ("acc_norm", 4),
         "winogrande": ("acc", 2), "boolq": ("acc", 2)}
N_ITEMS = 200
DATA_SET_ITEMS = {"hellaswag": 10042, "piqa": 1838, "arc_easy": 2376, "winogrande": 1267, "boolq": 3270}  # n_available
N_WINDOWS = 40
ROUNDS = 6
LIBRARIES = {"python": "3.11.7", "torch": "2.13.0", "transformers": "5.24.0", "lm_eval": "0.4.13"}
DEVICE = {"device": "cpu", "torch_threads": 2, "cpu": "x86_64"}
CODE = {"version": "0.1.0", "commit": "0" * 40, "source_digest": "code0000", "libraries": "libs0000"}
DENSE_PARAMS = 134_515_008
PROBE = {"fp32_gflops": 60.0, "bf16_gflops": 12.0, "memory_gbps": 9.0, "device": "cpu", "seconds": 2.0}  # bench/probe.py

# Profiles of real `laco bench` runs on a tiny model, for the tests that run the command (their `{spec}`
# is the model folder): perplexity of one 16-token window alone, and small settings of two measurements.
QUICK_PROFILE = """measurements = ["perplexity"]
[model]
spec = "{spec}"
[perplexity]
window = 16
n_windows = 1
batch_size = 1
lm_eval_wikitext = false
"""
# Two cheap depth methods, the second matched to the first's ratio: pruned copies to plan, keep and remove.
TWO_DEPTH_METHODS = """
[[methods]]
name = "shortgpt"
target = 0.25
[[methods]]
name = "drop"
target = "match:shortgpt"
"""
SMALL_SETTINGS = """
[perplexity]
window = 64
n_windows = 2
batch_size = 2
lm_eval_wikitext = false

[accuracy]
batch_size = 2
"""


def _seed(*parts: str) -> int:
    return int.from_bytes(json.dumps(parts).encode()[:8].ljust(8, b"\0"), "little") % (2**32) ^ len("".join(parts))


def item_outcomes(task: str, key: str, score: float, n: int, spread: float = 0.6) -> list[int]:
    """n outcomes with exactly round(score * n) correct: the items easiest for this model, where an
    item's ease is the task's shared difficulty plus this model's own noise."""
    shared = np.random.default_rng(_seed("task", task)).normal(size=n)
    own = np.random.default_rng(_seed("model", task, key)).normal(size=n) * spread
    order = np.argsort(shared + own)
    correct = np.zeros(n, dtype=int)
    correct[order[: round(score * n)]] = 1
    return correct.tolist()


def accuracy_values(key: str, scores: dict[str, float], n: int = N_ITEMS) -> dict:
    tasks, items = {}, {}
    for task, score in scores.items():
        metric, choices = TASKS.get(task, ("acc", 4))
        correct = item_outcomes(task, key, score, n)
        p = sum(correct) / n
        tasks[task] = {metric: p, f"{metric}_stderr": math.sqrt(p * (1 - p) / (n - 1)), "n": n, "metric": metric,
                       "task_hash": f"hash-{task}", "chance": 1 / choices, "n_available": DATA_SET_ITEMS.get(task)}
        items[task] = {"doc_id": list(range(n)), "doc_hash": [f"{task}-{i}" for i in range(n)], metric: correct,
                       "n_choices": [choices] * n}
        if metric == "acc_norm":
            items[task]["acc"] = correct
    return {"lm_eval_version": "0.4.13", "tasks": tasks, "items": items,
            "not_available": {"CHID": "no lm-eval task", "C3": "no lm-eval task", "CMNLI": "no lm-eval task",
                              "XSum": "no lm-eval task"}}


def perplexity_values(key: str, ppl: float, n: int = N_WINDOWS, window: int = 512) -> dict:
    """Per-window NLL around a shared per-window difficulty, shifted so the perplexity is exactly `ppl`."""
    tokens = window - 1
    shared = np.random.default_rng(_seed("windows")).normal(size=n) * 0.3
    own = np.random.default_rng(_seed("windows", key)).normal(size=n) * 0.05
    per_token = shared + own
    per_token += math.log(ppl) - per_token.mean()
    nll = (per_token * tokens).tolist()
    return {"windows": {"ppl": math.exp(sum(nll) / (tokens * n)), "window": window, "n_windows": n,
                        "tokens_per_window": tokens, "dataset": "wikitext-2 test", "nll": nll},
            "lm_eval_wikitext": {"word_perplexity": round(ppl * 1.7, 2), "documents": 1}}


def throughput_values(key: str, decode: float, engine: str, phase: str, rounds: int = ROUNDS) -> dict:
    """Per-round rates: a drift shared by every model of a round (the machine), a little noise of its own."""
    drift = 1 + np.random.default_rng(_seed("drift", engine)).normal(size=rounds) * 0.15
    own = 1 + np.random.default_rng(_seed("own", engine, key)).normal(size=rounds) * 0.01
    rates = {"decode_tokens_per_s": (decode * drift * own).tolist(),
             "prefill_tokens_per_s": (decode * 20 * drift * own).tolist()}
    rates["output_tokens_per_s"] = [d * 0.9 for d in rates["decode_tokens_per_s"]]
    rates["total_tokens_per_s"] = [d * 3 for d in rates["decode_tokens_per_s"]]
    summary = {name: {"median": float(np.median(v)), "min": min(v), "max": max(v)} for name, v in rates.items()}
    return {"engine": engine, "protocol": "interleaved rounds", "phase": phase, "rounds": rounds, "warmup": 1,
            "batch_size": 4, "input_len": 64, "output_len": 32, "resident": True, "per_round": rates, **summary}


def flops_values(decode_flops_per_token: float, parameters: int, layers: int | None = None) -> dict:
    """bench.flops' result shape for a workload of 4 prompts of 64 tokens and 32 new tokens."""
    workload = {"batch_size": 4, "input_len": 64, "output_len": 32, "prefill_logits": "last position"}
    prefill = decode_flops_per_token * 4 * 64
    return {"counter": "fixture", "workload": workload,
            "parameters": {"total": parameters, "non_embedding": parameters - 28_311_552, "layers": layers},
            "prefill": {"flops": prefill, "flops_per_token": decode_flops_per_token},
            "decode": {"steps": 31, "flops_per_token_mean": decode_flops_per_token},
            "workload_flops": prefill + 31 * 4 * decode_flops_per_token}


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
    after = round(DENSE_PARAMS * (1 - ratio))
    record = {
        "method": method, "source": {"model_id": "HuggingFaceTB/SmolLM2-135M-Instruct", "kind": "gguf"},
        "source_fingerprint": "src0123456789abc",
        "parameters": {"before": DENSE_PARAMS, "after": after, "kept_ratio": after / DENSE_PARAMS, "pruning_ratio": ratio},
        "prune_seconds": seconds, "loader": loader,
        "loadable": {"transformers": loader == "transformers", "vllm": vllm,
                     "reason": "standard config and tensor shapes" if vllm else "per-layer widths differ"},
        "fingerprint": f"fp-{method}",
    }
    record.update(extra or {})
    return record


def _result(key: str, fingerprint: str, name: str, values: dict | None, reason: str | None = None,
            seconds: float = 1.0) -> dict:
    return {"model": key, "model_fingerprint": fingerprint, "measurement": name,
            "status": "ok" if reason is None else "n/a", "reason": reason, "settings": {"fixture": True},
            "settings_hash": "settings0", "values": values or {}, "code": CODE,
            "provenance": {"libraries": LIBRARIES, "device": DEVICE, "seed": 0, "git_commit": CODE["commit"],
                           "started": "2025-01-01T00:00:00+00:00", "seconds": seconds}}


def write_run(path: Path, models: dict[str, dict], *, profile: str = "smollm2-135m", finished: bool = True,
              acceptance: list[dict] | None = None, phase: str = "phase-1", probe: dict | None = PROBE,
              settings: dict | None = None) -> Path:
    """models: {key: {"method", "record", "accuracy": {task: score}, "ppl", "param_mb", "peak_mb", "hf", "vllm"
    (decode tok/s, or a string: the n/a reason), "prune_s", "flops" (decode FLOPs per token), "layers", "weights" (digest),
    "same_as" (copy another model's evidence: identical weights), "omit": [measurements],
    "stale": [measurements written for an older fingerprint], "pruned" (a post-trained model: its pruning stage,
    bench.posttrained), "prune_settings_hash"}}; probe: the machine probe in run.json (None: an older
    run without one); settings: more of the profile (e.g. its `measurements`)."""
    path.mkdir(parents=True, exist_ok=True)
    methods = [{"label": k, "name": spec.get("method", k), "paper": spec.get("paper")} for k, spec in models.items()
               if k != "dense"]
    run = {"profile": {"name": profile, "model": {"spec": "smollm2-135m", "dtype": "float32", "device": "cpu"},
                       "methods": methods, "acceptance": acceptance or [], **(settings or {})},
           "profile_name": profile, "started": "2025-01-01T00:00:00+00:00",
           "finished": "2025-01-01T00:20:00+00:00" if finished else None, "git_commit": CODE["commit"],
           "code": CODE, "code_history": [{**CODE, "since": "2025-01-01T00:00:00+00:00"}],
           "libraries": LIBRARIES, "device": DEVICE, "seed": 0, "data_dir": "/data", **({"probe": probe} if probe else {})}
    _write(path / "run.json", run)
    for key, spec in models.items():
        method = spec.get("method", key)
        fp = f"fp-{key}"
        evidence_key = spec.get("same_as", key)  # identical weights: the same answers, windows, timings
        _write(path / "models" / f"{key}.json", {"key": key, "method": method, "fingerprint": fp,
                                                  "record": spec.get("record", {}), "saved": spec.get("saved"),
                                                  "weights_sha256": spec.get("weights"), "point": spec.get("point"),
                                                  **{k: spec[k] for k in ("pruned", "prune_settings_hash") if k in spec}})
        decode_flops = spec.get("flops")
        results = {
            "accuracy": "accuracy" in spec and accuracy_values(evidence_key, spec["accuracy"]),
            "perplexity": "ppl" in spec and perplexity_values(evidence_key, spec["ppl"]),
            "memory": "param_mb" in spec and {"param_mb": spec["param_mb"], "buffer_mb": 0.1,
                                              "peak_mb": spec.get("peak_mb"), "peak_kind": "subprocess_peak_rss"},
            "flops": decode_flops and flops_values(decode_flops, spec.get("params", DENSE_PARAMS), spec.get("layers")),
            "throughput_hf": "hf" in spec and throughput_values(evidence_key, spec["hf"], "hf", phase),
            "pruning_time": "prune_s" in spec and {"seconds": spec["prune_s"],
                                                   "repeats": [spec["prune_s"] * f for f in (1.0, 1.03, 0.98)]},
        }
        for name, values in results.items():
            if values and name not in spec.get("omit", ()):
                stale = name in spec.get("stale", ())
                _write(path / "results" / key / f"{name}.json", _result(key, "fp-older" if stale else fp, name, values))
        vllm = spec.get("vllm")
        if isinstance(vllm, str):
            _write(path / "results" / key / "throughput_vllm.json", _result(key, fp, "throughput_vllm", None, vllm))
        elif vllm is not None:
            _write(path / "results" / key / "throughput_vllm.json",
                   _result(key, fp, "throughput_vllm", throughput_values(evidence_key, vllm, "vllm", phase)))
    return path


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n", encoding="utf-8")


# --- ready-made runs ------------------------------------------------------------------------------

DENSE_SCORES = {"hellaswag": 0.43, "piqa": 0.68, "arc_easy": 0.58, "winogrande": 0.60, "boolq": 0.62}
LACO_STEPS = [(26, 3, 0.93, True), (24, 3, 0.71, True), (22, 3, 0.58, False), (21, 3, 0.66, True),
              (19, 3, 0.52, False), (18, 3, 0.49, False), (17, 3, 0.55, False)]
DENSE_FLOPS = 2 * 106_000_000  # decode FLOPs per token: 2 x the non-embedding parameters, roughly


def depth_flops(ratio: float) -> int:
    """A depth-pruned model's decode FLOPs: the layers shrink, the lm_head (a fixed share) does not."""
    head = 0.2 * DENSE_FLOPS
    return round(head + (DENSE_FLOPS - head) * (1 - ratio / 0.79))


def good_models() -> dict[str, dict]:
    """A run where LaCo (27%) meets every claim: it keeps >80% and beats every baseline clearly."""
    laco_rec = model_record("laco", 0.27, 4.1, laco_record(30, LACO_STEPS, 0.65, 4.1))
    return {
        "dense": {"method": "dense", "accuracy": DENSE_SCORES, "ppl": 18.2, "param_mb": 513.1, "peak_mb": 1290.0,
                  "hf": 20.0, "vllm": 100.0, "flops": DENSE_FLOPS, "weights": "w-dense"},
        "laco": {"record": laco_rec, "saved": "runs/x/models/laco", "accuracy": {
            "hellaswag": 0.425, "piqa": 0.675, "arc_easy": 0.575, "winogrande": 0.595, "boolq": 0.615},
                 "ppl": 31.5, "param_mb": 374.6, "peak_mb": 1010.0, "hf": 24.0, "vllm": 120.0, "prune_s": 4.1,
                 "flops": depth_flops(0.27), "weights": "w-laco", "point": "27%"},
        "llm-pruner": {"record": model_record("llm-pruner", 0.265, 21.0, loader="laco.baselines.llm_pruner:load",
                                              vllm=False),
                       "accuracy": {"hellaswag": 0.30, "piqa": 0.58, "arc_easy": 0.40, "winogrande": 0.52,
                                    "boolq": 0.55},
                       "ppl": 44.0, "param_mb": 380.0, "peak_mb": 1040.0, "hf": 21.0,
                       "vllm": "per-layer widths differ: vLLM needs one width", "prune_s": 21.0,
                       "flops": round(DENSE_FLOPS * 0.9), "weights": "w-llmp", "point": "27%"},
        "slicegpt": {"record": model_record("slicegpt", 0.26, 35.0, {"calibration_warning": "210 calibration tokens "
                                            "for bases of 404 directions"}, loader="laco.baselines.slicegpt:load",
                                            vllm=False),
                     "accuracy": {"hellaswag": 0.29, "piqa": 0.57, "arc_easy": 0.38, "winogrande": 0.51,
                                  "boolq": 0.52},
                     "ppl": 52.0, "param_mb": 385.0, "peak_mb": 1060.0, "hf": 20.5,
                     "vllm": "rotated residual stream: not a stock architecture", "prune_s": 35.0,
                     "flops": round(DENSE_FLOPS * 0.92), "weights": "w-slice", "point": "27%"},
        "drop": {"record": model_record("drop", 0.27, 3.0), "accuracy": {
            "hellaswag": 0.31, "piqa": 0.57, "arc_easy": 0.40, "winogrande": 0.52, "boolq": 0.50},
                 "ppl": 60.0, "param_mb": 374.6, "peak_mb": 1005.0, "hf": 24.1, "prune_s": 3.0,
                 "flops": depth_flops(0.27), "weights": "w-drop", "point": "27%"},
        "rule-merge": {"record": model_record("rule-merge", 0.27, 0.5), "accuracy": {
            "hellaswag": 0.33, "piqa": 0.58, "arc_easy": 0.42, "winogrande": 0.51, "boolq": 0.53},
                       "ppl": 48.0, "param_mb": 374.6, "peak_mb": 1008.0, "hf": 24.0, "prune_s": 0.5,
                       "flops": depth_flops(0.27), "weights": "w-rule", "point": "27%"},
    }


def depth_models() -> dict[str, dict]:
    """The good run with the depth baselines at LaCo's 27%: CoMe (keeps 96% of the dense average, below
    LaCo, above ShortGPT) and ShortGPT, both stock-loadable."""
    models = good_models()
    common = {"ppl": 40.0, "param_mb": 374.6, "peak_mb": 1005.0, "hf": 24.0, "vllm": 120.0,
              "flops": depth_flops(0.27), "point": "27%"}
    models["shortgpt"] = {"record": model_record("shortgpt", 0.27, 1.5), "accuracy": {
        "hellaswag": 0.30, "piqa": 0.58, "arc_easy": 0.40, "winogrande": 0.52, "boolq": 0.52},
        "prune_s": 1.5, "weights": "w-shortgpt", **common}
    models["come"] = {"record": model_record("come", 0.27, 2.5), "accuracy": {
        "hellaswag": 0.40, "piqa": 0.66, "arc_easy": 0.55, "winogrande": 0.58, "boolq": 0.60},
        "prune_s": 2.5, "weights": "w-come", **common}
    return models


def example_models() -> dict[str, dict]:
    """The committed example: LaCo at 27% (mostly good, with one failure and one undecided claim), LaCo
    at the paper's setting (7.9%, outside the claims' conditions), rule-merge identical to it, one n/a
    engine, one missing and one stale measurement, so the report shows every kind of verdict."""
    models = good_models()
    models["laco"]["accuracy"] = {"hellaswag": 0.41, "piqa": 0.62, "arc_easy": 0.45, "winogrande": 0.53, "boolq": 0.47}
    models["rule-merge"]["accuracy"] = dict(models["laco"]["accuracy"], boolq=0.60)  # the rule beats the search
    models["drop"]["stale"] = ["perplexity"]
    del models["slicegpt"]["prune_s"]
    paper_setting = model_record("laco", 0.079, 5.6, laco_record(30, LACO_STEPS[:1], 0.65, 5.6))
    models["laco-paper"] = {"method": "laco", "record": paper_setting, "accuracy": {
        "hellaswag": 0.42, "piqa": 0.66, "arc_easy": 0.56, "winogrande": 0.55, "boolq": 0.60},
        "ppl": 1826.8, "param_mb": 472.6, "peak_mb": 1200.0, "hf": 21.0, "prune_s": 5.6,
        "flops": depth_flops(0.079), "weights": "w-laco-paper", "point": "paper setting"}
    models["rule-paper"] = {"method": "rule-merge", "record": model_record("rule-merge", 0.079, 0.1),
                            "same_as": "laco-paper", "accuracy": models["laco-paper"]["accuracy"],
                            "ppl": 1826.8, "param_mb": 472.6, "peak_mb": 1200.0, "hf": 21.0, "prune_s": 0.1,
                            "flops": depth_flops(0.079), "weights": "w-laco-paper", "point": "paper setting"}
    return models


def loss_curve(key: str, start: float, end: float, steps: int = 100, tokens_per_step: int = 1024) -> list[dict]:
    """A training's logged loss per step: from `start` decaying to `end`, with a per-step difficulty shared by
    every training on the same text (the same batch at the same step) and a little noise of its own."""
    shared = np.random.default_rng(_seed("batches")).normal(size=steps) * 0.05
    own = np.random.default_rng(_seed("loss", key)).normal(size=steps) * 0.01
    decay = np.exp(-np.arange(1, steps + 1) / (steps / 5))
    losses = end + (start - end) * decay + shared + own
    return [{"step": i + 1, "loss": float(v), "tokens": (i + 1) * tokens_per_step} for i, v in enumerate(losses)]


def post_trained(model: dict, before: str, recipe: str, start: float, end: float, *, key: str, random_init: bool = False,
                 seconds: float = 600.0, **changes) -> dict:
    """A model spec of `model` post-trained by the bench: its record's `post_training` (laco.posttrain's
    shape) and its pruning stage naming `before`'s fingerprint, as bench.posttrained writes them."""
    curve = loss_curve(key, start, end)
    post = {"recipe": recipe, "random_init": random_init, "steps": len(curve), "tokens_per_step": 1024,
            "tokens_seen": curve[-1]["tokens"], "loss_curve": curve, "seconds": seconds, "cpu_seconds": 2 * seconds}
    return {**model, "record": {**model["record"], "post_training": post}, "weights": f"w-{key}",
            "pruned": {"fingerprint": f"fp-{before}", "record": model["record"], "weights_sha256": model.get("weights")},
            **changes}


def post_trained_models() -> dict[str, dict]:
    """A run of the post-training profile's shape: LaCo at 27% before and after `continue` training (clearly
    better), its random-init control (a clearly higher loss), the post-trained LaCo re-pruned to 45% (keeping
    about 93% of its average), LLM-Pruner before and after LoRA (below post-trained LaCo), CoMe before and
    after distillation (better)."""
    models = depth_models()
    models = {k: models[k] for k in ("dense", "laco", "llm-pruner", "come")}
    models["laco"].update(accuracy={"hellaswag": 0.33, "piqa": 0.60, "arc_easy": 0.45, "winogrande": 0.53, "boolq": 0.55},
                          ppl=40.0)
    trained = {"hellaswag": 0.40, "piqa": 0.66, "arc_easy": 0.55, "winogrande": 0.58, "boolq": 0.62}
    models["laco-continue"] = post_trained(models["laco"], "laco", "continue", 3.6, 2.8, key="laco-continue",
                                           method="laco", accuracy=trained, ppl=30.0)
    models["laco-random"] = post_trained(models["laco"], "laco", "continue", 10.0, 6.5, key="laco-random", method="laco",
                                         random_init=True, omit=["accuracy", "perplexity"])
    models["llm-pruner-lora"] = post_trained(models["llm-pruner"], "llm-pruner", "lora", 4.0, 3.3, key="llm-pruner-lora",
                                             method="llm-pruner", seconds=900.0, accuracy={
                                                 "hellaswag": 0.34, "piqa": 0.62, "arc_easy": 0.46, "winogrande": 0.55,
                                                 "boolq": 0.58}, ppl=36.0)
    models["come-distill"] = post_trained(models["come"], "come", "distill", 2.0, 1.2, key="come-distill", method="come",
                                          accuracy={"hellaswag": 0.43, "piqa": 0.70, "arc_easy": 0.60,
                                                    "winogrande": 0.62, "boolq": 0.66}, ppl=34.0)
    re_pruned = model_record("laco", 0.45, 3.0, {"pruned_from": {"label": "laco-continue", "fingerprint": "fp-laco-continue"}})
    models["laco-re-pruned"] = {"method": "laco", "record": re_pruned, "weights": "w-laco-re-pruned", "point": "45%",
                                "accuracy": {"hellaswag": 0.35, "piqa": 0.60, "arc_easy": 0.48, "winogrande": 0.53,
                                             "boolq": 0.55}, "ppl": 55.0}
    return models


if __name__ == "__main__":
    target = FIXTURES / "example-smollm2"
    if target.exists() and "--force" not in sys.argv:
        sys.exit(f"{target} exists; pass --force to rewrite it (the golden report changes with it)")
    import shutil

    shutil.rmtree(target, ignore_errors=True)
    print(write_run(target, example_models(), acceptance=[
        {"id": "laco-ppl-within-3x-dense", "statement": "A pruned LaCo model's perplexity stays within 3x dense.",
         "subject": "laco", "metric": "perplexity.ppl", "comparison": "<=", "threshold": 3.0, "gate": True}]))
