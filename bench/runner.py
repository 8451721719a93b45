"""A run: measure the dense model, prune with every method of the profile and measure each, then time
the throughput of all of them together in interleaved rounds.

Methods run in profile order, because a method may take its target from an earlier one
(`target = "match:laco"`: the parameter pruning ratio LaCo achieved in this run). Each pruned model
is saved under runs/<ID>/weights/<label>; a resumed run reloads it instead of pruning again, unless
what decides its weights changed (method, parameters, target, dense model, calibration, or the code).
A model's identity includes the digest of its weight files, so two models with identical weights are
seen as such, and a result is reused only for the same model, settings and code (bench.store).

Failure leaves nothing stale: a failed prune removes that label's record, weights and results; a
failed measurement replaces the earlier result with a "failed" record. A process killed at any
point loses at most the measurement in flight (bench.store), and the next run cleans up after it.
"""

from __future__ import annotations

import importlib
import inspect
import time
import traceback
import uuid
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from bench.store import RunStore, now, settings_hash
from bench.subject import Subject, dense_folder
from laco import LacoError
from laco.faults import kill_point
from laco.provenance import device_info, fingerprint, folder_weights_sha256, git_commit, library_versions

MODULES = {
    "pruning_time": "bench.pruning_time",
    "memory": "bench.memory",
    "perplexity": "bench.perplexity",
    "accuracy": "bench.accuracy",
    "flops": "bench.flops",
    "throughput_hf": "bench.throughput",
    "throughput_vllm": "bench.vllm_engine",
}
# measured for all models together, in interleaved rounds, after every model is pruned
PHASED = ("pruning_time", "throughput_hf", "throughput_vllm")


class RunContext:
    """What measurements need to know about the run: the profile, the store, the data dir."""

    def __init__(self, profile: dict, store: RunStore, data_dir: str | None, progress: bool):
        self.profile, self.store, self.data_dir, self.progress = profile, store, data_dir, progress

    def dense_load_args(self) -> dict:
        m = self.profile["model"]
        return {"kind": "dense", "spec": m["spec"], "revision": m.get("revision"), "dtype": m["dtype"],
                "device": m["device"], "device_map": m["device_map"], "trust_remote_code": m["trust_remote_code"]}

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
        return prepare_tasks(names, self.data_dir, self.store.root / "lm_eval_tasks", extra=self.profile["tasks"])

    def tasks(self):
        return self._tasks

    @cached_property
    def _vllm(self) -> dict:
        from bench.vllm_engine import vllm_settings

        return vllm_settings(self.profile)

    def vllm_settings(self) -> dict:
        return self._vllm

    def calibration(self, settings: dict | None) -> tuple[list[str], dict]:
        """The calibration texts of the profile (or of one method) and their record."""
        from bench.calibration import calibration_texts

        return calibration_texts(settings or self.profile["calibration"], self.data_dir, self.profile)


def run_profile(
    profile_name: str,
    profile: dict,
    out: str | Path,
    *,
    data_dir: str | None = None,
    progress: bool = True,
    on_result: Callable[[dict], None] | None = None,
    reuse_other_code: bool = False,
) -> list[str]:
    """Run (or resume) a profile into `out`; returns the measurements that failed (empty: all done).

    `on_result` is called with every result right after it is written (tests use it to stop a run
    after its first result)."""
    from laco.loading import resolve

    store = RunStore(out, reuse_other_code=reuse_other_code)
    ctx = RunContext(profile, store, data_dir, progress)
    # everything that can be checked is checked before anything is loaded or measured
    ctx.tasks()
    for method in [{}, *profile["methods"]]:
        ctx.calibration(method.get("calibration"))
    source = resolve(profile["model"]["spec"], revision=profile["model"].get("revision"))
    store.start(profile_name, profile, data_dir=data_dir, seed=profile["seed"], device=profile["model"]["device"])
    dense = Subject("dense", "dense", dense_fingerprint(source.fingerprint(), profile["model"]["dtype"]), {},
                    ctx.dense_load_args(), folder=dense_folder(source))
    store.write_model({"key": "dense", "method": "dense", "fingerprint": dense.fingerprint, "record": {},
                       "saved": None, "source": source.as_dict(), "weights_sha256": source.sha256 or source.revision,
                       "point": "dense"})

    from tqdm.auto import tqdm

    names = profile["measurements"]
    per_model = [n for n in names if n not in PHASED]
    total = len(per_model) * (1 + len(profile["methods"])) + len(set(names) & set(PHASED))
    failures: list[str] = []
    subjects = [dense]
    with tqdm(total=total, desc="bench", unit="measurement", disable=not progress) as bar:
        measure_subject(dense, ctx, bar, failures, on_result, per_model)
        dense.release()
        for method in profile["methods"]:
            bar.set_postfix_str(f"{method['label']}: pruning")
            try:
                subject = pruned_subject(method, ctx, dense.fingerprint)
            except KeyboardInterrupt:
                store.forget_model(method["label"])
                raise
            except Exception as exc:  # a method that refuses its target, or a broken pruner: the others still run
                store.forget_model(method["label"])
                refused = isinstance(exc, LacoError)  # a refusal says why in one line; a bug shows where
                failures.append(f"{method['label']}/pruning: {exc}" if refused else
                                f"{method['label']}/pruning: {type(exc).__name__}: {exc}")
                bar.write(f"FAILED {method['label']}/pruning: {exc if refused else traceback.format_exc(limit=-3)}")
                bar.update(len(per_model))
                continue
            own = method.get("measurements")  # a method may take part in some measurements only
            measure_subject(subject, ctx, bar, failures, on_result, [n for n in per_model if own is None or n in own])
            subject.release()
            subjects.append(subject)
        for name in PHASED:
            if name in names:
                bar.set_postfix_str(f"{name}: interleaved rounds")
                taking = [s for s in subjects if name in measurements_of(s, profile)]
                throughput_phase(name, taking, ctx, failures, on_result)
                bar.update()
    if not failures:
        store.finish()
    return failures


def measurements_of(subject: Subject, profile: dict) -> list[str]:
    """The measurements a model takes: the profile's, or the subset its method entry names."""
    method = next((m for m in profile["methods"] if m["label"] == subject.key), None)
    own = (method or {}).get("measurements")
    return [n for n in profile["measurements"] if own is None or n in own]


def dense_fingerprint(source_fingerprint: str, dtype: str) -> str:
    return fingerprint({"source_fingerprint": source_fingerprint, "method": "dense", "dtype": dtype})


def result_doc(subject: Subject, name: str, settings: dict, digest: str, outcome, ctx, started: str,
               seconds: float) -> dict:
    return {
        "model": subject.key,
        "model_fingerprint": subject.fingerprint,
        "measurement": name,
        "status": outcome.status,
        "reason": outcome.reason,
        "settings": settings,
        "settings_hash": digest,
        "provenance": {"libraries": library_versions(), "device": device_info(settings.get("device", "cpu")),
                       "seed": ctx.profile["seed"], "git_commit": git_commit(), "started": started, "seconds": seconds},
        "values": outcome.values,
    }


def failed(reason: str):
    from bench.subject import Outcome

    return Outcome("failed", reason, {})


def measure_subject(subject: Subject, ctx: RunContext, bar, failures: list[str], on_result, names: list[str]) -> None:
    for name in names:
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
        except Exception as exc:  # one broken measurement must not stop the others; its old result goes
            failures.append(f"{subject.key}/{name}: {type(exc).__name__}: {exc}")
            bar.write(f"FAILED {subject.key}/{name}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
            outcome = failed(f"{type(exc).__name__}: {exc}")
        kill_point("bench:measuring")
        doc = result_doc(subject, name, settings, digest, outcome, ctx, started, time.perf_counter() - t0)
        ctx.store.write_result(doc)
        kill_point("bench:written")
        bar.update()
        if on_result:
            on_result(doc)


# --- throughput: every model in one phase of interleaved rounds ---------------------------------------

def throughput_phase(name: str, subjects: list[Subject], ctx: RunContext, failures: list[str], on_result) -> None:
    """Time every model of the run together (bench.rounds) and write one result per model, all
    carrying the same phase id: the suites pair their rounds. The phase is one unit: unless every
    model's result of it is fresh, all are timed again."""
    module = importlib.import_module(MODULES[name])
    subjects = [s for s in subjects if s.method != "dense"] if name == "pruning_time" else subjects
    settings = module.settings(ctx)
    digest = settings_hash(settings)
    docs = [ctx.store.read_result(s.key, name) for s in subjects]
    phases = {((d or {}).get("values") or {}).get("phase") for d in docs}
    if all(ctx.store.is_fresh(s.key, name, s.fingerprint, digest) for s in subjects) and len(phases) == 1:
        return
    started, t0 = now(), time.perf_counter()
    try:
        outcomes = module.measure_phase(subjects, settings, ctx)
    except (KeyboardInterrupt, LacoError):
        raise
    except Exception as exc:
        failures.append(f"{name}: {type(exc).__name__}: {exc}")
        outcomes = {s.key: failed(f"{type(exc).__name__}: {exc}") for s in subjects}
    seconds = time.perf_counter() - t0
    phase = f"{name}-{started}-{uuid.uuid4().hex[:8]}"
    shares = phase_shares(outcomes)
    for subject in subjects:
        outcome = outcomes[subject.key]
        if outcome.status == "ok":
            outcome.values["phase"] = phase
        doc = result_doc(subject, name, settings, digest, outcome, ctx, started, seconds * shares.get(subject.key, 0.0))
        doc["provenance"]["phase_seconds"] = seconds
        ctx.store.write_result(doc)
        if on_result:
            on_result(doc)
    for subject in subjects:
        subject.release()


def phase_shares(outcomes: dict) -> dict[str, float]:
    """Each model's share of the phase's wall time, by the time its own timed calls took."""
    spent = {k: sum(r.get("total_s", 0.0) for r in ((o.values.get("per_round") or {}).get("results") or []))
             for k, o in outcomes.items()}
    total = sum(spent.values())
    return {k: v / total for k, v in spent.items()} if total else {k: 1 / len(outcomes) for k in outcomes}


# --- pruned models ----------------------------------------------------------------------------------

def pruned_subject(method: dict, ctx: RunContext, dense_fp: str) -> Subject:
    """The pruned model of one method entry: reloaded from the run's weights when still valid (same
    prune settings, same code, weights as recorded), else pruned from a fresh dense copy and saved."""
    from laco.loading import load_model
    from laco.pruners import get_pruner
    from laco.saving import save_pruned

    from bench.store import code_key

    label, name, store, model = method["label"], method["name"], ctx.store, ctx.profile["model"]
    sentences, calibration = ctx.calibration(method.get("calibration"))
    params = dict(method["params"])
    target_ratio = resolve_target(method, store)
    prune_settings = {"method": name, "params": params, "target_ratio": target_ratio, "dense": dense_fp,
                      "calibration": calibration, "dtype": model["dtype"], "device": model["device"],
                      "device_map": model["device_map"], "seed": ctx.profile["seed"], "code": code_key()}
    digest = settings_hash(prune_settings)
    folder = store.weights_dir(label)
    doc = store.read_model(label)
    same_settings = doc and (doc.get("prune_settings_hash") == digest or (
        store.reuse_other_code and settings_hash(_without_code(doc.get("prune_settings") or {}))
        == settings_hash(_without_code(prune_settings))))
    if (same_settings and (folder / "laco.json").is_file()
            and doc.get("weights_sha256") == folder_weights_sha256(folder)):
        record = doc["record"]
        return Subject(label, name, doc["fingerprint"], record, ctx.pruned_load_args(folder), folder=str(folder),
                       prune_call=doc.get("prune_call"))
    store.forget_model(label)  # nothing of an older model of this label may be read from here on

    loaded = load_model(model["spec"], dtype=model["dtype"], device=model["device"], revision=model.get("revision"),
                        trust_remote_code=model["trust_remote_code"], device_map=model["device_map"])
    pruner = get_pruner(name)
    kwargs = dict(params)
    if target_ratio is not None:
        kwargs["target_ratio"] = target_ratio
    accepted = inspect.signature(pruner).parameters
    for key, value in (("calibration_file", calibration), ("seed", ctx.profile["seed"]),
                       ("progress", ctx.progress)):
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    outcome = pruner(loaded, sentences, **kwargs)
    kill_point("bench:pruned")
    record = outcome.record
    save_pruned(outcome.model, loaded.tokenizer, folder, record, force=True)
    weights = folder_weights_sha256(folder)
    identity = fingerprint({"pruned": record["fingerprint"], "weights": weights})
    prune_call = {"name": name, "kwargs": retiming_kwargs(kwargs, record), "sentences": sentences}
    store.write_model({"key": label, "method": name, "fingerprint": identity, "record": record, "saved": str(folder),
                       "weights_sha256": weights, "point": method.get("point"), "prune_settings": prune_settings,
                       "prune_settings_hash": digest, "prune_call": prune_call, "code": code_key()})
    subject = Subject(label, name, identity, record, ctx.pruned_load_args(folder), folder=str(folder),
                      prune_call=prune_call)
    subject.adopt(outcome.model, loaded.tokenizer)
    return subject


def _without_code(prune_settings: dict) -> dict:
    """Prune settings apart from the code that pruned: with --reuse-results-from-other-code a model
    pruned by other code is kept (its weights digest is still checked), as its results are."""
    return {k: v for k, v in prune_settings.items() if k != "code"}


def retiming_kwargs(kwargs: dict, record: dict) -> dict:
    """The arguments that prune the same model again for the pruning-time phase. A LaCo-style search in
    target mode is given the threshold its bisection chose: the final search at that T is what its
    pruning time measures (the paper times a fixed T), and it decides as the run's search did."""
    out = {k: v for k, v in kwargs.items() if k != "progress"}
    if record.get("threshold_search") and "T" in (record.get("config") or {}):
        out = {k: v for k, v in out.items() if k not in ("target_ratio", "target_layers")}
        out["T"] = record["config"]["T"]
    return out


def resolve_target(method: dict, store: RunStore) -> float | None:
    """A ratio, or "match:LABEL": the parameter pruning ratio that LABEL achieved in this run."""
    target = method["target"]
    if not isinstance(target, str):
        return target
    other = target.removeprefix("match:")
    doc = store.read_model(other)
    if not doc:
        raise RuntimeError(f"method {method['label']!r} matches {other!r}, which has no pruned model in this run "
                        "(its pruning failed)")
    return doc["record"]["parameters"]["pruning_ratio"]
