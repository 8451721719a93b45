"""The provenance record of a pruned model, built once, when the prune is done, and fingerprinted there.

Its fields, in this order: laco_bench_version, created, method, source, source_fingerprint, config
(the method's hyper-parameters), target (what it was asked to reach), calibration (where the texts
came from, how many, their SHA-256), parameters {before, after, kept_ratio, pruning_ratio}, dtype,
seed, libraries, device, git_commit; then the method's own details; then prune_seconds (the pruning
step alone, no load or save), loader ("transformers" when stock `AutoModelForCausalLM` reloads the
output, else "module:function"), loadable {transformers, vllm, reason}; last the fingerprint.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime, timezone

from torch import nn

import laco
from laco.calibration import text_record
from laco.provenance import device_info, fingerprint, git_commit, library_versions
from laco.surgery import parameter_count

STOCK_LOADABLE = {"transformers": True, "vllm": True, "reason": "standard config and tensor shapes"}

# What decides a pruned model's weights: its identity in run folders (and so on every resume).
FINGERPRINT_FIELDS = ("source_fingerprint", "method", "config", "target", "calibration", "dtype")
# The calibration's part of it: the texts themselves. The rest of its description (which documents,
# how they were drawn) is where those texts came from, which their digest already pins.
CALIBRATION_IDENTITY = ("file", "sentences", "sha256")
# What decides a post-trained model's weights, beside its input's fingerprint and the text's digest.
POST_TRAINING_IDENTITY = ("recipe", "hyperparameters", "seed", "random_init", "precision")


@dataclass
class PruneOutcome:
    """What a pruner returns: the pruned model (`loaded.model`, changed, or a new one) and its record."""

    model: nn.Module
    record: dict


def calibration_description(sentences: list[str], calibration: str | dict | None) -> dict:
    """Where the calibration texts came from, as recorded: from a path or description (None: the
    built-in sentences), or the caller's whole description (a `laco.calibration.text_record`, with
    e.g. the documents it was drawn from). The count and digest are always those of `sentences`."""
    if isinstance(calibration, dict):
        return {**calibration, **text_record(sentences, calibration.get("file"))}
    return text_record(sentences, calibration)


def parameter_record(before: int, after: int) -> dict:
    return {"before": before, "after": after, "kept_ratio": after / before, "pruning_ratio": 1 - after / before}


def record_fingerprint(record: dict) -> str:
    """Identity of a pruned model: its source and everything that decided its weights."""
    fields = {k: record[k] for k in FINGERPRINT_FIELDS}
    fields["calibration"] = {k: record["calibration"][k] for k in CALIBRATION_IDENTITY}
    return fingerprint(fields)


def build_record(
    loaded,
    method: str,
    sentences: list[str],
    *,
    calibration: str | dict | None,
    config: dict,
    target: dict | None,
    params_before: int,
    seed: int,
    prune_seconds: float,
    loader: str = "transformers",
    loadable: dict = STOCK_LOADABLE,
    **details,
) -> dict:
    """The whole record of `loaded.model` as pruned, with the method's `details`, and its fingerprint."""
    first = next(loaded.model.parameters())
    record = {
        "laco_bench_version": laco.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "source": loaded.source.as_dict(),
        "source_fingerprint": loaded.source.fingerprint(),
        "config": config,
        "target": target,
        "calibration": calibration_description(sentences, calibration),
        "parameters": parameter_record(params_before, parameter_count(loaded.model)),
        "dtype": str(first.dtype).removeprefix("torch."),
        "seed": seed,
        "libraries": library_versions(),
        "device": device_info(first.device),
        "git_commit": git_commit(),
        **details,
        "prune_seconds": prune_seconds,
        "loader": loader,
        "loadable": dict(loadable),
    }
    record["fingerprint"] = record_fingerprint(record)
    return record


def pruned(loaded, method: str, sentences: list[str], **fields) -> PruneOutcome:
    """`loaded.model` as pruned, with its record (`build_record`'s fields)."""
    return PruneOutcome(loaded.model, build_record(loaded, method, sentences, **fields))


def post_trained_fingerprint(post: dict) -> str:
    """Identity of a post-trained model: its input, the training text and everything that decided the training."""
    return fingerprint({"input": post["input_fingerprint"], "text_sha256": post["text"]["sha256"],
                        **{k: post[k] for k in POST_TRAINING_IDENTITY}})


def with_post_training(record: dict, post: dict) -> dict:
    """The input's record, its `post_training` the new one (an earlier one kept in `earlier_post_training`),
    and a fingerprint that names the training too."""
    out = copy.deepcopy(record)
    if "post_training" in out:
        out["earlier_post_training"] = out.get("earlier_post_training", []) + [out.pop("post_training")]
    out["post_training"] = post
    out["fingerprint"] = post_trained_fingerprint(post)
    return out
