"""A run: measure the dense model, then prune with every method of the profile and measure each.

Methods run in profile order, because a method may take its target from an earlier one
(`target = "match:laco"`: the parameter pruning ratio LaCo achieved in this run). Each pruned
model is saved under runs/<ID>/weights/<label>; a resumed run reloads it instead of pruning
again, unless what decides its weights (method, parameters, target, dense model, calibration)
changed. Each (model, measurement) result is skipped when its file is fresh (same model
fingerprint, same settings hash) and written the moment it is measured otherwise.
"""

from __future__ import annotations

import importlib
import inspect
import time
import traceback
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from bench.store import RunStore, now, settings_hash
from bench.subject import Subject, dense_folder
from laco import LacoError
from laco.provenance import device_info, fingerprint, git_commit, library_versions

MODULES = {
    "pruning_time": "bench.pruning_time",
    "memory": "bench.memory",
    "perplexity": "bench.perplexity",
    "accuracy": "bench.accuracy",
    "throughput_hf": "bench.throughput",
    "throughput_vllm": "bench.vllm_engine",
}


class RunContext:
    """What measurements need to know about the run: the profile, the store, the data dir."""

    def __init__(self, profile: dict, store: RunStore, data_dir: str | None, progress: bool):
        self.profile, self.store, self.data_dir, self.progress = profile, store, data_dir, progress

    def dense_load_args(self) -> dict:
        m = self.profile["model"]
        return {"kind": "dense", "spec": m["spec"], "dtype": m["dtype"], "device": m["device"],
                "device_map": m["device_map"], "trust_remote_code": m["trust_remote_code"]}

    def pruned_load_args(self, folder: Path) -> dict:
        m = self.profile["model"]
        return {"kind": "pruned", "folder": str(folder), "dtype": m["dtype"], "device": m["device"],
                "device_map": m["device_map"], "trust_remote_code": m["trust_remote_code"]}

    @cached_property
    def _tasks(self):
        from bench.tasks import prepare_tasks

        names = list(self.profile["accuracy"]["tasks"])
        if self.profile["perplexity"]["lm_eval_wikitext"]:
            names.append("wikitext")
        return prepare_tasks(names, self.data_dir, self.store.root / "lm_eval_tasks")

    def tasks(self):
        return self._tasks

    @cached_property
    def _vllm(self) -> dict:
        from bench.vllm_engine import vllm_settings

        return vllm_settings(self.profile)

    def vllm_settings(self) -> dict:
        return self._vllm


def run_profile(
    profile_name: str,
    profile: dict,
    out: str | Path,
    *,
    data_dir: str | None = None,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
) -> list[str]:
    """Run (or resume) a profile into `out`; returns the measurements that failed (empty: all done).

    `on_result` is called with every result right after it is written (tests use it to stop a
    run after its first result)."""
    from laco.calibration import load_sentences
    from laco.loading import resolve

    store = RunStore(out)
    store.start(profile_name, profile, data_dir=data_dir, seed=profile["seed"], device=profile["model"]["device"])
    ctx = RunContext(profile, store, data_dir, progress)
    sentences = load_sentences(profile["calibration"]["file"])
    source = resolve(profile["model"]["spec"])
    dense = Subject("dense", "dense", dense_fingerprint(source.fingerprint(), profile["model"]["dtype"]), {},
                    ctx.dense_load_args(), folder=dense_folder(source))
    store.write_model({"key": "dense", "method": "dense", "fingerprint": dense.fingerprint, "record": {},
                       "saved": None, "source": source.as_dict()})

    from tqdm.auto import tqdm

    names = profile["measurements"]
    total = len(names) * (1 + len(profile["methods"])) - ("pruning_time" in names)
    failures: list[str] = []
    with tqdm(total=total, desc="bench", unit="measurement", disable=not progress) as bar:
        measure_subject(dense, ctx, bar, failures, on_result)
        dense.release()
        for method in profile["methods"]:
            bar.set_postfix_str(f"{method['label']}: pruning")
            try:
                subject = pruned_subject(method, ctx, dense.fingerprint, sentences)
            except (KeyboardInterrupt, LacoError):
                raise
            except Exception as exc:  # a broken pruner must not stop the other methods
                failures.append(f"{method['label']}/pruning: {type(exc).__name__}: {exc}")
                bar.write(f"FAILED {method['label']}/pruning: {traceback.format_exc(limit=-3)}")
                bar.update(len(names))
                continue
            measure_subject(subject, ctx, bar, failures, on_result)
            subject.release()
    if not failures:
        store.finish()
    return failures


def dense_fingerprint(source_fingerprint: str, dtype: str) -> str:
    return fingerprint({"source_fingerprint": source_fingerprint, "method": "dense", "dtype": dtype})


def measure_subject(subject: Subject, ctx: RunContext, bar, failures: list[str], on_result) -> None:
    for name in ctx.profile["measurements"]:
        if name == "pruning_time" and subject.method == "dense":
            continue
        bar.set_postfix_str(f"{subject.key}: {name}")
        module = importlib.import_module(MODULES[name])
        settings = module.settings(ctx)
        digest = settings_hash(settings)
        if ctx.store.is_fresh(subject.key, name, subject.fingerprint, digest):
            bar.update()
            continue
        started, t0 = now(), time.perf_counter()
        try:
            outcome = module.measure(subject, settings, ctx)
        except (KeyboardInterrupt, LacoError):
            raise
        except Exception as exc:  # one broken measurement must not stop the others; nothing is written
            failures.append(f"{subject.key}/{name}: {type(exc).__name__}: {exc}")
            bar.write(f"FAILED {subject.key}/{name}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
            bar.update()
            continue
        doc = {
            "model": subject.key,
            "model_fingerprint": subject.fingerprint,
            "measurement": name,
            "status": outcome.status,
            "reason": outcome.reason,
            "settings": settings,
            "settings_hash": digest,
            "provenance": {"libraries": library_versions(), "device": device_info(settings.get("device", "cpu")),
                           "seed": ctx.profile["seed"], "git_commit": git_commit(), "started": started,
                           "seconds": time.perf_counter() - t0},
            "values": outcome.values,
        }
        ctx.store.write_result(doc)
        bar.update()
        if on_result:
            on_result(doc)


def pruned_subject(method: dict, ctx: RunContext, dense_fp: str, sentences: list[str]) -> Subject:
    """The pruned model of one method entry: reloaded from the run's weights when still valid,
    else pruned from a fresh dense copy and saved."""
    from laco.pruners import get_pruner
    from laco.saving import save_pruned

    label, name, store, model = method["label"], method["name"], ctx.store, ctx.profile["model"]
    params = dict(method["params"])
    target_ratio = resolve_target(method, store)
    prune_settings = {"method": name, "params": params, "target_ratio": target_ratio, "dense": dense_fp,
                      "calibration": fingerprint(sentences), "calibration_file": ctx.profile["calibration"]["file"],
                      "dtype": model["dtype"], "device": model["device"], "device_map": model["device_map"],
                      "seed": ctx.profile["seed"]}
    digest = settings_hash(prune_settings)
    folder = store.weights_dir(label)
    doc = store.read_model(label)
    if doc and doc.get("prune_settings_hash") == digest and (folder / "laco.json").is_file():
        record = doc["record"]
        return Subject(label, name, record["fingerprint"], record, ctx.pruned_load_args(folder), folder=str(folder))

    from laco.loading import load_model

    loaded = load_model(model["spec"], dtype=model["dtype"], device=model["device"],
                        trust_remote_code=model["trust_remote_code"], device_map=model["device_map"])
    pruner = get_pruner(name)
    kwargs = dict(params)
    if target_ratio is not None:
        kwargs["target_ratio"] = target_ratio
    accepted = inspect.signature(pruner).parameters
    for key, value in (("calibration_file", ctx.profile["calibration"]["file"]), ("seed", ctx.profile["seed"]),
                       ("progress", ctx.progress)):
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    outcome = pruner(loaded, sentences, **kwargs)
    record = outcome.record
    save_pruned(outcome.model, loaded.tokenizer, folder, record, force=True)
    store.write_model({"key": label, "method": name, "fingerprint": record["fingerprint"], "record": record,
                       "saved": str(folder), "prune_settings": prune_settings, "prune_settings_hash": digest})
    subject = Subject(label, name, record["fingerprint"], record, ctx.pruned_load_args(folder), folder=str(folder))
    subject.adopt(outcome.model, loaded.tokenizer)
    return subject


def resolve_target(method: dict, store: RunStore) -> float | None:
    """A ratio, or "match:LABEL": the parameter pruning ratio that LABEL achieved in this run."""
    target = method["target"]
    if not isinstance(target, str):
        return target
    other = target.removeprefix("match:")
    doc = store.read_model(other)
    if not doc:
        raise LacoError(f"method {method['label']!r} matches {other!r}, which has no pruned model in this run")
    return doc["record"]["parameters"]["pruning_ratio"]
