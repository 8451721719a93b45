"""Pruning methods behind one interface, selected by name: the shipped ones and those other packages
register as plugins (`laco.plugins`).

A pruner is a function `prune(loaded, sentences, *, target_ratio=None, target_layers=None,
calibration_file=None, seed=0, progress=True, **params) -> PruneOutcome`: it changes
`loaded.model` (or returns a new model) and returns it with its provenance record
(`laco.record.build_record`, or `laco.record.pruned` for both at once). Its own parameters are its
other keyword-only arguments, with their defaults. `calibration_file` says where the texts came
from: a path or description, or the caller's whole description (a dict such as
`laco.calibration.text_record` returns). Entries are "module:function" strings, imported on first
use, so the core does not import a baseline it does not run. Beside its pruner a module may declare
what the plan and the streamed prune read before loading: `peak_memory` (`memory_need`), `prune_work`
(`work_need`), `min_calibration_tokens` and `vllm_overrides`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
from collections.abc import Callable
from pathlib import Path

from laco import LacoError
from laco.record import STOCK_LOADABLE, PruneOutcome  # noqa: F401  (the pruner interface's names)

PRUNERS: dict[str, str] = {
    "laco": "laco.prune:laco_pruner",
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


def registry() -> dict[str, str]:
    """Every method by name, "module:function": the shipped ones first, then the plugins'."""
    from laco.plugins import plugins

    return {**PRUNERS, **{name: p.entry for name, p in plugins(frozenset(PRUNERS)).items()}}


def plugin_package(name: str) -> str | None:
    """The package that registers the method (None for a shipped one)."""
    from laco.plugins import plugins

    found = plugins(frozenset(PRUNERS)).get(name) if name not in PRUNERS else None
    return found.package if found else None


def get_pruner(name: str) -> Callable[..., PruneOutcome]:
    known = registry()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LacoError(f"unknown pruning method {name!r}{hint} (known: {', '.join(known)})")
    module, _, attribute = known[name].partition(":")
    found = importlib.import_module(module)
    for part in attribute.split("."):
        found = getattr(found, part)
    return measured(found)


def measured(pruner: Callable[..., PruneOutcome]) -> Callable[..., PruneOutcome]:
    """The pruner, its record given `peak_memory`: the process's peak resident memory during the step
    (and CUDA's max_memory_allocated where CUDA is in use; `laco.memory.PeakMemory`); the model's weights
    are read in first (`laco.loading.read_weights`), so neither its clock nor its peak depends on what a
    lazy load left on disk."""
    @functools.wraps(pruner)
    def run(*args, **kwargs) -> PruneOutcome:
        from laco.loading import read_weights
        from laco.memory import PeakMemory

        loaded = args[0] if args else kwargs.get("loaded")
        if getattr(loaded, "model", None) is not None:
            read_weights(loaded.model)  # the file reads a lazy load deferred, before the pruner's clock starts
        with PeakMemory() as peak:
            outcome = pruner(*args, **kwargs)
        outcome.record["peak_memory"] = peak.as_dict()
        return outcome

    return run


def summary(name: str) -> str:
    """The method's line in `--list-methods`: a plugin's `summary` attribute or its docstring's first line."""
    if name in SUMMARIES:
        return SUMMARIES[name]
    pruner = get_pruner(name)
    text = getattr(pruner, "summary", None) or (inspect.getdoc(pruner) or "").strip()
    return text.splitlines()[0] if text else "(no summary)"


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
    get_pruner(name)  # an unknown name fails as everywhere else
    need = _declared(name, "min_calibration_tokens")
    if need is None:
        return 0
    return need(loaded, target_ratio=target_ratio, target_layers=target_layers, **params)


def vllm_overrides_for(record: dict, folder) -> dict | None:
    """What vLLM must be told beyond the saved config to serve a pruned output (None: nothing). A pruner
    module whose outputs no stock architecture describes declares it as `vllm_overrides(record, folder)`."""
    name = record.get("method")
    declared = _declared(name, "vllm_overrides") if name in registry() else None
    return declared(record, folder) if declared else None


def memory_need(name: str, shape, *, streamed: bool, **params) -> dict[str, int] | None:
    """Bytes the method holds at its peak on a model of this shape (`laco.memory.ModelShape`, its
    calibration batch included), by part, beside the interpreter itself; resident (the whole model in
    memory) or streamed (layer by layer, `laco.stream`). None: the method cannot stream, or its module
    declares no formula (a plugin may not). A pruner module declares it as `peak_memory(shape, *, streamed, **params)`."""
    get_pruner(name)  # an unknown name fails as everywhere else
    declared = _declared(name, "peak_memory")
    return declared(shape, streamed=streamed, **params) if declared else None


def work_need(name: str, shape, **params):
    """What the method computes on a model of this shape and calibration batch (`laco.work.Work`), for
    the run's plan to time; None when its module declares no `prune_work(shape, **params)` (a plugin may not)."""
    get_pruner(name)
    declared = _declared(name, "prune_work")
    return declared(shape, **params) if declared else None


def _declared(name: str, attribute: str):
    """A module-level function the pruner's module declares beside the pruner (None when it has none)."""
    return getattr(importlib.import_module(registry()[name].partition(":")[0]), attribute, None)


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
