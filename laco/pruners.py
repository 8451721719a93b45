"""Pruning methods behind one interface, selected by name.

A pruner is a function `prune(loaded, sentences, *, target_ratio=None, target_layers=None,
**params) -> PruneOutcome`: it changes `loaded.model` (or returns a new model) and returns the
provenance record. Entries are "module:function" strings, imported on first use, so the core
does not import a baseline it does not run.

Every record carries at least: method, source, source_fingerprint, parameters {before, after,
kept_ratio, pruning_ratio}, prune_seconds (the pruning step alone, no load or save), loader
("transformers" when stock `AutoModelForCausalLM` reloads the output, else "module:function"),
loadable {transformers, vllm, reason}, and fingerprint.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from laco import LacoError


@dataclass
class PruneOutcome:
    model: nn.Module
    record: dict


PRUNERS: dict[str, str] = {
    "laco": "laco.pruners:laco_pruner",
    "drop": "laco.baselines.drop:prune",
    "rule-merge": "laco.baselines.rule_merge:prune",
    "shortgpt": "laco.baselines.shortgpt:prune",
    "come": "laco.baselines.come:prune",
    "llm-pruner": "laco.baselines.llm_pruner:prune",
    "slicegpt": "laco.baselines.slicegpt:prune",
}


# One line each, for `laco prune --list-methods`.
SUMMARIES: dict[str, str] = {
    "laco": "Layer Collapse: merge runs of layers into the one below while the output stays similar (LaCo, Alg. 1)",
    "drop": "LaCo's search deleting the layers above the pointer instead of merging them (LaCo appendix B.6)",
    "rule-merge": "merge fixed groups of C layers from the top down, no similarity check (LaCo appendix B.7)",
    "shortgpt": "delete the layers of lowest Block Influence, 1 - cos(layer input, layer output) (ShortGPT)",
    "come": "merge the closest adjacent pair by concatenating their most sensitive heads and channels (CoMe)",
    "llm-pruner": "remove the KV groups and MLP channels of lowest Taylor importance (LLM-Pruner, no tuning)",
    "slicegpt": "rotate the residual stream by PCA and slice the hidden width (SliceGPT)",
}

# Keyword arguments every pruner takes besides its own parameters.
COMMON_ARGUMENTS = ("target_ratio", "target_layers", "calibration_file", "seed", "progress")

# The LaCo ablations of the paper's appendix (B.6 drop, B.7 rule-merge) compare like with like only
# when they run with the LaCo method's own settings: these are the parameters each one takes from it.
SHARED_WITH_LACO: dict[str, tuple[str, ...]] = {
    "drop": ("C", "L", "H", "I"),
    "rule-merge": ("merge", "C"),
}


def get_pruner(name: str) -> Callable[..., PruneOutcome]:
    if name not in PRUNERS:
        close = difflib.get_close_matches(name, PRUNERS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LacoError(f"unknown pruning method {name!r}{hint} (known: {', '.join(PRUNERS)})")
    module, func = PRUNERS[name].split(":")
    return getattr(importlib.import_module(module), func)


def pruner_parameters(name: str) -> dict[str, object]:
    """The method's own parameters and their defaults, read from its signature."""
    signature = inspect.signature(get_pruner(name))
    return {p.name: p.default for p in signature.parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name not in COMMON_ARGUMENTS}


def check_parameters(name: str, params: dict) -> None:
    """Refuse parameters the method does not take, before any work."""
    known = pruner_parameters(name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        close = [m for u in unknown for m in difflib.get_close_matches(u, known, n=1)]
        hint = f"; did you mean {close[0]!r}?" if len(unknown) == 1 and close else ""
        raise LacoError(f"{name} does not take {', '.join(unknown)}{hint} (its parameters: {', '.join(known) or 'none'})")


def calibration_tokens_needed(name: str, loaded, *, target_ratio: float | None = None, target_layers: int | None = None,
                           **params) -> int:
    """Calibration tokens the method needs on this model at this target (0: no minimum). A pruner
    module declares it as `min_calibration_tokens(loaded, target_ratio=, target_layers=, **params)`;
    the pruner checks it itself too."""
    module = importlib.import_module(PRUNERS[name].split(":")[0]) if name in PRUNERS else None
    need = getattr(module, "min_calibration_tokens", None)
    if need is None:
        get_pruner(name)  # an unknown name fails as everywhere else
        return 0
    return need(loaded, target_ratio=target_ratio, target_layers=target_layers, **params)


def vllm_overrides_for(record: dict, folder) -> dict | None:
    """What vLLM must be told beyond the saved config to serve a pruned output (None: nothing). A pruner
    module whose outputs no stock architecture describes declares it as `vllm_overrides(record, folder)`."""
    name = record.get("method")
    module = importlib.import_module(PRUNERS[name].split(":")[0]) if name in PRUNERS else None
    declared = getattr(module, "vllm_overrides", None)
    return declared(record, folder) if declared else None


STOCK_LOADABLE = {"transformers": True, "vllm": True, "reason": "standard config and tensor shapes"}


def finish_record(record: dict, *, prune_seconds: float, loader: str = "transformers",
                  loadable: dict = STOCK_LOADABLE) -> dict:
    """Add the fields of the pruner interface to a record from `laco.prune.common_record`."""
    from laco.prune import pruned_fingerprint

    record["prune_seconds"] = prune_seconds
    record["loader"] = loader
    record["loadable"] = dict(loadable)
    record["fingerprint"] = pruned_fingerprint(record)
    return record


def laco_pruner(
    loaded,
    sentences: list[str],
    *,
    target_ratio: float | None = None,
    target_layers: int | None = None,
    merge: str = "paper",
    paper_setting: str | None = None,
    C: int | None = None,
    L: int | None = None,
    H: int | None = None,
    I: int | None = None,  # noqa: E741
    T: float | None = None,
    engine: str = "cached",
    compare_engines: bool = False,
    calibration_file: str | None = None,
    seed: int = 0,
    progress: bool = True,
    **unknown,
) -> PruneOutcome:
    """LaCo; C, L, H, I, T override the paper setting or the defaults (None: keep them)."""
    from laco.collapse import make_config
    from laco.prune import prune_laco

    if unknown:
        raise LacoError(f"unknown laco parameters: {', '.join(sorted(unknown))}")
    hyper = {k: v for k, v in {"C": C, "L": L, "H": H, "I": I, "T": T}.items() if v is not None}
    config = make_config(merge=merge, paper_setting_name=paper_setting,
                         n_layers=loaded.model.config.num_hidden_layers, **hyper)
    result, record = prune_laco(
        loaded, config, sentences, calibration_file=calibration_file, engine=engine,
        target_layers=target_layers, target_ratio=target_ratio, compare_engines=compare_engines,
        seed=seed, progress=progress,
    )
    return PruneOutcome(loaded.model, finish_record(record, prune_seconds=result.search_seconds))


def load_pruned(folder: str | Path, *, dtype: str = "float32", device: str = "cpu",
                trust_remote_code: bool = False, device_map: str | dict | None = None):
    """Load any pruned output of this project: (model, tokenizer, record). Stock-shaped outputs go
    through transformers (remote code only when asked; a device_map spreads a large model over
    GPUs); reshaped ones through the loader their record names."""
    from laco.loading import DTYPES
    from laco.saving import read_provenance

    record = read_provenance(folder)
    loader = record.get("loader", "transformers")
    if loader == "transformers":
        from transformers import AutoModelForCausalLM, AutoTokenizer

        model = AutoModelForCausalLM.from_pretrained(folder, dtype=DTYPES[dtype], device_map=device_map,
                                                     trust_remote_code=trust_remote_code)
        if device_map is None:
            model.to(device)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
        return model.eval(), tokenizer, record
    if trust_remote_code or device_map is not None:
        raise LacoError(f"{loader} loads on one device without remote code; "
                        "trust_remote_code and device_map apply to stock-shaped outputs only")
    module, func = loader.split(":")
    return getattr(importlib.import_module(module), func)(folder, dtype=dtype, device=device)


def describe(record: dict) -> str:
    return json.dumps({k: record.get(k) for k in ("method", "parameters", "prune_seconds")}, default=str)
