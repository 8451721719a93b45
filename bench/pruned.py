"""The pruned model of one method entry of a profile: reused from the run's weights when still valid,
else pruned from a fresh dense copy, saved, and recorded.

A saved model is reused only when what decides its weights is unchanged (method, parameters, target,
dense model, calibration, dtype, device, seed and the code; with --reuse-results-from-other-code the
code is left out) and its weight files still have the recorded digest. Otherwise its record, weights
and results are forgotten before pruning again, so nothing of the older model can be read later.

The pruning runs in the prune dtype (`[model] prune_dtype`; the CPU profiles: float32), and the weights
are saved in it; the measurements load them in the run's dtype. So the settings' dtype is the prune
dtype, and the run's dtype is in the dense model's fingerprint beside it; where the two differ, the
model's identity names the dtype it is measured in, and a model measured in bf16 is not taken for the
same weights measured in float32 (whose identity, like that of every run pruning in its own dtype, is
what it was before prune_dtype existed).

An entry with `source = "LABEL"` prunes that earlier entry's saved model (post-trained, if it was)
instead of the dense one. Its target is a ratio of the dense model, given to the pruner as the ratio
of its input that reaches it, and its record states the parameters against the dense model (the
pruner's own figures under `pruned_from`). An entry with `post_train` is then trained (bench.posttrained).

With `[run] keep_pruned_weights = "while-measured"` the runner removes a model's weights once no later
step reads them (bench.weights_kept); its record is then reused without them, and `restore_weights`
prunes again, with the recorded settings, for a step that must read them, checking the recorded digest.
"""

from __future__ import annotations

import inspect
import shutil

from bench.context import RunContext
from bench.posttrained import drop_post_training, post_trained_subject, pruning_stage
from bench.profile import MethodSettings
from bench.store import RunStore, settings_hash
from bench.subject import Subject, pruned_identity
from laco import LacoError
from laco.atomic import write_json
from laco.faults import kill_point
from laco.provenance import folder_weights_sha256
from laco.record import parameter_record, record_fingerprint
from laco.saving import PROVENANCE_FILE


def pruned_subject(method: MethodSettings, ctx: RunContext, dense_fp: str) -> Subject:
    """The model the entry measures: pruned (from the dense model or its `source`), then post-trained if asked."""
    sentences, calibration = ctx.calibration(method.calibration)
    settings = prune_settings(method, ctx, dense_fp, calibration)
    subject = reusable(method, ctx, settings)
    if subject is None:
        ctx.store.forget_model(method.label)  # nothing of an older model of this label may be read from here on
        subject = prune_and_save(method, ctx, settings, sentences)
    if method.post_train is None:
        drop_post_training(method.label, ctx.store)  # an earlier run of this entry post-trained it
        return subject
    return post_trained_subject(method, ctx, subject)


def source_model(method: MethodSettings, store: RunStore) -> dict | None:
    """The model record (models/<label>.json) of the entry `method` prunes further; None: the dense model."""
    if method.source is None:
        return None
    doc = store.read_model(method.source)
    if not doc:
        raise LacoError(f"method {method.label!r} prunes the model of {method.source!r}, which has no model in this run "
                        "(its pruning failed)")
    return doc


def prune_settings(method: MethodSettings, ctx: RunContext, dense_fp: str, calibration: dict) -> dict:
    """Everything that decides the pruned weights (hashed: a change prunes again)."""
    from bench import store

    m = ctx.profile.model
    source = source_model(method, ctx.store)
    return {"method": method.name, "params": dict(method.params), "target_ratio": resolve_target(method, ctx.store),
            "dense": dense_fp, "calibration": calibration, "dtype": m.pruning_dtype(), "device": m.device,
            "device_map": m.device_map, "seed": ctx.profile.seed, "code": store.code_key(),
            **({"source": {"label": method.source, "fingerprint": source["fingerprint"]}} if source else {})}


def reusable(method: MethodSettings, ctx: RunContext, settings: dict) -> Subject | None:
    """The saved model of this label, when it was pruned with these settings and its weights are intact."""
    store, folder = ctx.store, ctx.store.weights_dir(method.label)
    doc = store.read_model(method.label)
    doc = doc and pruning_stage(doc)
    same_settings = doc and (doc.get("prune_settings_hash") == settings_hash(settings) or (
        store.reuse_other_code and settings_hash(_without_code(doc.get("prune_settings") or {}))
        == settings_hash(_without_code(settings))))
    if not same_settings:
        return None
    removed = not folder.exists() and removes_weights(method.label, ctx)  # trusted: the digest is checked when remade
    intact = (folder / "laco.json").is_file() and doc.get("weights_sha256") == folder_weights_sha256(folder)
    if not (removed or intact):
        return None
    return Subject(method.label, method.name, doc["fingerprint"], doc["record"], ctx.pruned_load_args(folder),
                   folder=str(folder), prune_call=doc.get("prune_call"))


def prune_and_save(method: MethodSettings, ctx: RunContext, settings: dict, sentences: list[str]) -> Subject:
    """Prune a fresh dense copy, save it under the run's weights and record it; the subject holds it in memory."""
    source = source_model(method, ctx.store)
    outcome, loaded, kwargs, record = prune_into_folder(method, ctx, settings, sentences, source)
    folder = ctx.store.weights_dir(method.label)
    weights = folder_weights_sha256(folder)
    identity = pruned_identity(record, weights, ctx.profile.model)
    prune_call = {"name": method.name, "kwargs": retiming_kwargs(kwargs, record), "sentences": sentences,
                  **({"source": source["saved"], "source_label": method.source} if source else {})}
    ctx.store.write_model({"key": method.label, "method": method.name, "fingerprint": identity, "record": record,
                           "saved": str(folder), "weights_sha256": weights, "point": method.point,
                           "prune_settings": settings, "prune_settings_hash": settings_hash(settings),
                           "prune_call": prune_call, "code": settings["code"], "dtypes": model_dtypes(record, ctx)})
    subject = Subject(method.label, method.name, identity, record, ctx.pruned_load_args(folder), folder=str(folder),
                      prune_call=prune_call)
    if outcome is not None and ctx.profile.model.pruning_dtype() == ctx.profile.model.dtype:  # else measured as saved
        subject.adopt(outcome.model, loaded.tokenizer)
    return subject


def prune_into_folder(method: MethodSettings, ctx: RunContext, settings: dict, sentences: list[str], source: dict | None):
    """Prune a fresh copy of the dense model (or of `source`'s) and save it under the run's weights of the
    label: (the pruner's outcome, the loaded input, the pruner's arguments, the record saved)."""
    from laco.pruners import get_pruner
    from laco.saving import save_pruned

    from bench import streamed

    if source:
        restore_weights(source["key"], ctx)
    pruner = get_pruner(method.name)
    kwargs = pruner_arguments(pruner, settings, ctx)
    if source and "target_ratio" in kwargs:
        kwargs["target_ratio"] = target_against_source(kwargs["target_ratio"], source["record"])
    folder = ctx.store.weights_dir(method.label)
    plan = streamed.memory_plan(method.name, kwargs, ctx, sentences, source and source["saved"])
    if plan is not None and plan.stream:  # the model stays on disk; nothing of it is left in memory to adopt
        record = streamed.prune_into(method.name, kwargs, ctx, sentences, folder, plan, source and source["saved"])
        outcome = loaded = None
    else:
        loaded = ctx.load_to_prune(source and source["saved"], method.source)
        outcome = pruner(loaded, sentences, **kwargs)
        record = outcome.record
        if plan is not None:
            record["memory"] = plan.as_dict()
    kill_point("bench:pruned")
    record = against_dense(record, source, settings["target_ratio"]) if source else record
    if outcome is None:
        write_json(folder / PROVENANCE_FILE, record)  # against the dense model, for a re-pruning entry
    else:
        save_pruned(outcome.model, loaded.tokenizer, folder, record, force=True)
    return outcome, loaded, kwargs, record


def removes_weights(label: str, ctx: RunContext) -> bool:
    """True when the run removes this entry's weights once read (`[run] keep_pruned_weights`, bench.weights_kept)."""
    from bench.weights_kept import last_reader

    return label in last_reader(ctx.profile)


def weights_removed(label: str, ctx: RunContext) -> bool:
    """True when the run removed the weights of `label` and a step that reads them must make them again."""
    return removes_weights(label, ctx) and not (ctx.store.weights_dir(label) / "laco.json").is_file()


def restore_weights(label: str, ctx: RunContext) -> None:
    """Make again the weights the run removed from weights/<label> (its source's first, when also removed),
    with the recorded settings, and check they are the recorded ones: the results kept stand for those."""
    if not weights_removed(label, ctx):
        return
    method = next(m for m in ctx.profile.methods if m.label == label)
    doc = pruning_stage(ctx.store.read_model(label))
    sentences, _ = ctx.calibration(method.calibration)
    prune_into_folder(method, ctx, doc["prune_settings"], sentences, source_model(method, ctx.store))
    folder = ctx.store.weights_dir(label)
    made = folder_weights_sha256(folder)
    if made != doc["weights_sha256"]:
        shutil.rmtree(folder, ignore_errors=True)
        raise LacoError(f"{label}: pruned again for a step that reads its weights, it gave other weights (sha256 "
                        f"{made[:12]}) than those its results were measured on ({doc['weights_sha256'][:12]}); "
                        f"remove {ctx.store.model_path(label)} to prune and measure it afresh")


def target_against_source(target: float, source_record: dict) -> float:
    """A target ratio of the dense model's parameters as the ratio of its input's a pruner takes: the
    source keeps `after` of the dense `before`; the result must keep (1 - target) x before."""
    params = source_record["parameters"]
    relative = 1 - (1 - target) * params["before"] / params["after"]
    if relative <= 0:
        raise LacoError(f"target {target:.1%} of the dense model is reached already by the source model "
                        f"({params['pruning_ratio']:.1%} pruned): nothing is left to remove")
    return relative


def against_dense(record: dict, source: dict, target: float | None) -> dict:
    """A re-pruned model's record with its target ratio and parameter counts against the dense model; the
    pruner's own, against its input, and that input kept under `pruned_from`."""
    dense = source["record"]["parameters"]["before"]
    out = {**record, "parameters": parameter_record(dense, record["parameters"]["after"]),
           "pruned_from": {"label": source["key"], "fingerprint": source["fingerprint"],
                           "parameters": record["parameters"], "target": record.get("target")}}
    if target is not None and isinstance(record.get("target"), dict):
        out["target"] = {**record["target"], "ratio": target}
    out["fingerprint"] = record_fingerprint(out)
    return out


def model_dtypes(record: dict, ctx: RunContext) -> dict:
    """The dtype a model was pruned in (its record's; None for dense) and the one it is measured in."""
    return {"pruned": record.get("dtype"), "measured": ctx.profile.model.dtype}


def pruner_arguments(pruner, settings: dict, ctx: RunContext) -> dict:
    """The method's parameters, its target, and the common arguments the pruner takes."""
    kwargs = dict(settings["params"])
    if settings["target_ratio"] is not None:
        kwargs["target_ratio"] = settings["target_ratio"]
    accepted = inspect.signature(pruner).parameters
    for key, value in (("calibration_file", settings["calibration"]), ("seed", ctx.profile.seed),
                       ("progress", ctx.progress)):
        if key in accepted and key not in kwargs:
            kwargs[key] = value
    return kwargs


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


def resolve_target(method: MethodSettings, store: RunStore) -> float | None:
    """A ratio, or "match:LABEL": the parameter pruning ratio that LABEL achieved in this run."""
    other = method.matches
    if other is None:
        return method.target
    doc = store.read_model(other)
    if not doc:
        raise RuntimeError(f"method {method.label!r} matches {other!r}, which has no pruned model in this run "
                           "(its pruning failed)")
    return doc["record"]["parameters"]["pruning_ratio"]
