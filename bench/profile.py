"""Profiles: what a run measures, as TOML data (bench/profiles/<name>.toml or any .toml path).

A profile names the model, the pruning methods in the order they run, and the settings of each
measurement. Everything left out takes the defaults below; an unknown key is an error (a typo
must not silently fall back to a default). The resolved profile is stored in run.json.
"""

from __future__ import annotations

import copy
import re
import sys
from importlib import resources
from pathlib import Path

from laco import LacoError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MEASUREMENTS = ("pruning_time", "memory", "perplexity", "accuracy", "throughput_hf", "throughput_vllm")

DEFAULTS: dict = {
    "description": "",
    "seed": 0,
    "model": {"spec": None, "dtype": "float32", "device": "cpu", "device_map": None, "trust_remote_code": False},
    "calibration": {"file": None},  # None: laco's built-in sentences
    "methods": [],
    "measurements": ["pruning_time", "memory", "perplexity", "accuracy", "throughput_hf", "throughput_vllm"],
    "accuracy": {
        "backend": "hf",  # hf: lm-eval HFLM on the in-memory model; vllm: lm-eval's vllm backend
        "batch_size": 8,
        "max_length": None,  # HFLM context length; None: lm-eval's default for the model
        "bootstrap_iters": 1000,
        "tasks": {},  # lm-eval task or group -> {limit, num_fewshot, metric}
    },
    "perplexity": {
        "window": 512,  # the paper's protocol: non-overlapping windows of this many tokens
        "n_windows": None,  # None: every window of wikitext-2 test
        "batch_size": 4,
        "lm_eval_wikitext": True,  # also lm-eval's `wikitext` task (word perplexity)
        "lm_eval_limit": None,  # documents of the lm-eval task (62 in all)
        "lm_eval_max_length": None,  # rolling-window length of the lm-eval task
    },
    "memory": {"prompt_len": 128, "new_tokens": 32, "batch_size": 1},
    "throughput": {"batch_size": 8, "input_len": 128, "output_len": 128, "warmup": 1, "repeats": 3},
    "vllm": {
        "python": None,  # interpreter of the vLLM environment; env LACO_VLLM_PYTHON wins
        "tensor_parallel_size": 1,
        "max_model_len": None,
        "gpu_memory_utilization": 0.9,  # on CPU: the fraction of CPU memory vLLM may reserve
        "cpu_kvcache_gib": 1,  # CPU only: the KV cache size in GiB (vLLM's kv_cache_memory_bytes; 0.25 is fine too)
        "enforce_eager": False,  # True skips torch.compile (start-up minutes on CPU)
        "timeout_s": 1800,
    },
}
TASK_KEYS = {"limit", "num_fewshot", "metric"}
METHOD_KEYS = {"name", "label", "target", "params", "settings_from"}
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def profile_names() -> list[str]:
    folder = resources.files("bench").joinpath("profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def load_profile(name_or_path: str) -> tuple[str, dict]:
    """Read and resolve a profile by shipped name or by .toml path; returns (name, profile)."""
    path = Path(name_or_path)
    if name_or_path.endswith(".toml"):
        if not path.is_file():
            raise LacoError(f"profile file not found: {path}")
        text, name = path.read_text(encoding="utf-8"), path.stem
    else:
        entry = resources.files("bench").joinpath("profiles", f"{name_or_path}.toml")
        if not entry.is_file():
            import difflib

            names = profile_names()
            close = difflib.get_close_matches(name_or_path, names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise LacoError(f"unknown profile {name_or_path!r}{hint} (shipped: {', '.join(names)})")
        text, name = entry.read_text(encoding="utf-8"), name_or_path
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise LacoError(f"profile {name}: not valid TOML: {exc}") from None
    return name, resolve_profile(raw, name)


def resolve_profile(raw: dict, name: str = "profile") -> dict:
    profile = _merge(DEFAULTS, raw, name)
    _validate(profile, name)
    return profile


def _merge(defaults: dict, given: dict, where: str) -> dict:
    out = copy.deepcopy(defaults)
    for key, value in given.items():
        if key not in defaults:
            raise LacoError(f"{where}: unknown key {key!r} (known: {', '.join(defaults)})")
        free_form = key in ("tasks", "methods", "measurements")
        if isinstance(defaults[key], dict) and not free_form:
            if not isinstance(value, dict):
                raise LacoError(f"{where}.{key} must be a table")
            out[key] = _merge(defaults[key], value, f"{where}.{key}")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _validate(profile: dict, name: str) -> None:
    from laco.loading import DTYPES
    from laco.pruners import PRUNERS

    if not profile["model"]["spec"]:
        raise LacoError(f"{name}: model.spec is required")
    if profile["model"]["dtype"] not in DTYPES:
        raise LacoError(f"{name}: model.dtype must be one of {', '.join(DTYPES)}")
    unknown = [m for m in profile["measurements"] if m not in MEASUREMENTS]
    if unknown:
        raise LacoError(f"{name}: unknown measurements {unknown} (known: {', '.join(MEASUREMENTS)})")
    if profile["accuracy"]["backend"] not in ("hf", "vllm"):
        raise LacoError(f"{name}: accuracy.backend must be 'hf' or 'vllm'")
    for task, opts in profile["accuracy"]["tasks"].items():
        if not isinstance(opts, dict) or set(opts) - TASK_KEYS:
            raise LacoError(f"{name}: accuracy.tasks.{task} must be a table of {sorted(TASK_KEYS)}")
        if opts.get("metric") not in (None, "acc", "acc_norm"):
            raise LacoError(f"{name}: accuracy.tasks.{task}.metric must be 'acc' or 'acc_norm'")

    labels: list[str] = []
    for i, method in enumerate(profile["methods"]):
        where = f"{name}: methods[{i}]"
        if not isinstance(method, dict) or set(method) - METHOD_KEYS or "name" not in method:
            raise LacoError(f"{where} must be a table with 'name' and optional {sorted(METHOD_KEYS - {'name'})}")
        if method["name"] not in PRUNERS:
            raise LacoError(
                f"{where}: pruning method {method['name']!r} is not registered in laco.pruners.PRUNERS "
                f"(registered: {', '.join(PRUNERS)})"
            )
        method.setdefault("label", method["name"])
        method.setdefault("params", {})
        method.setdefault("target", None)
        label = method["label"]
        if not LABEL.match(label) or label == "dense":
            raise LacoError(f"{where}: label {label!r} must be a file-name-safe word other than 'dense'")
        if label in labels:
            raise LacoError(f"{where}: label {label!r} is used twice; give each method entry its own label")
        target = method["target"]
        if isinstance(target, str):
            if not target.startswith("match:") or target.removeprefix("match:") not in labels:
                raise LacoError(f"{where}: target {target!r} must be 'match:LABEL' of an earlier method ({labels})")
        elif target is not None and not (isinstance(target, float) and 0 < target < 1):
            raise LacoError(f"{where}: target must be a ratio in (0, 1) or 'match:LABEL', got {target!r}")
        if target is not None and {"target_ratio", "target_layers"} & set(method["params"]):
            raise LacoError(f"{where}: give the target either as 'target' or in params, not both")
        if "settings_from" in method:
            take_laco_settings(method, profile["methods"][:i], where)
        labels.append(label)


def take_laco_settings(method: dict, earlier: list[dict], where: str) -> None:
    """`settings_from = "LABEL"`: an ablation takes the parameters it shares with that earlier LaCo
    method (laco.pruners.SHARED_WITH_LACO); its own params override them."""
    from laco.pruners import SHARED_WITH_LACO

    source = next((m for m in earlier if m["label"] == method["settings_from"]), None)
    if source is None or source["name"] != "laco":
        raise LacoError(f"{where}: settings_from {method['settings_from']!r} must be the label of an earlier laco method")
    if method["name"] not in SHARED_WITH_LACO:
        raise LacoError(f"{where}: {method['name']} takes no settings from LaCo (only {', '.join(SHARED_WITH_LACO)})")
    shared = {k: source["params"][k] for k in SHARED_WITH_LACO[method["name"]] if k in source["params"]}
    method["params"] = {**shared, **method["params"]}
