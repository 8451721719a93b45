"""A model under measurement, loaded only when a measurement needs it in this process.

`load_args` is plain JSON, so a fresh subprocess (the memory worker) loads exactly the same
model as the main process would: the dense spec through `laco.loading.load_model`, a pruned
output through `laco.pruners.load_pruned`.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Outcome:
    status: str = "ok"  # "ok" | "n/a"
    reason: str | None = None
    values: dict = field(default_factory=dict)

    @classmethod
    def not_available(cls, reason: str) -> Outcome:
        return cls("n/a", reason, {})


@dataclass
class Subject:
    key: str  # "dense" or the method's label
    method: str  # "dense" or the pruner name
    fingerprint: str
    record: dict  # the pruner's provenance record ({} for dense)
    load_args: dict  # {"kind": "dense", "spec", "dtype", "device", "device_map", "trust_remote_code"}
    #                  or {"kind": "pruned", "folder", "dtype", "device", "device_map", "trust_remote_code"}
    folder: str | None = None  # a folder (or hub id) other engines (vLLM) can load
    prune_call: dict | None = None  # pruner name, its arguments and calibration texts: to time the pruning again
    _loaded: tuple | None = None

    def model_and_tokenizer(self):
        if self._loaded is None:
            self._loaded = load(self.load_args)
        return self._loaded

    def adopt(self, model, tokenizer) -> None:
        """Use a model already in memory (the one just pruned) instead of loading it again."""
        self._loaded = (model, tokenizer)

    def release(self) -> None:
        self._loaded = None
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover
            pass


def pruned_identity(record: dict, weights: str, model) -> str:
    """The pruned model as measured: its record, its weights, and the dtype it is measured in where that is
    not the one it was pruned in (`model`: the profile's ModelSettings)."""
    from laco.provenance import fingerprint

    measured_in = {"measured_in": model.dtype} if model.pruning_dtype() != model.dtype else {}
    return fingerprint({"pruned": record["fingerprint"], "weights": weights, **measured_in})


def load(args: dict):
    if args["kind"] == "dense":
        loaded = load_dense(args)
        return loaded.model, loaded.tokenizer
    from laco.pruners import load_pruned

    model, tokenizer, _ = load_pruned(args["folder"], dtype=args["dtype"], device=args["device"],
                                      trust_remote_code=args.get("trust_remote_code", False),
                                      device_map=args.get("device_map"))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def load_dense(args: dict):
    """A fresh copy of the dense model of `args` (kind "dense"), as laco.loading loads it: a LoadedModel."""
    from laco.loading import load_model

    return load_model(args["spec"], dtype=args["dtype"], device=args["device"], revision=args.get("revision"),
                      trust_remote_code=args.get("trust_remote_code", False), device_map=args.get("device_map"))


def dense_folder(source) -> str:
    """Where other engines find the dense weights: the converted folder of a GGUF, the model
    folder itself, or the hub id."""
    if source.kind in ("embedded", "gguf"):
        from laco.loading import gguf_cache_folder

        return str(gguf_cache_folder(Path(source.path), source.sha256))
    return source.path or source.spec


def model_device(args: dict) -> str:
    return "cuda" if args.get("device_map") else args["device"]
