"""Load -> collapse -> provenance: the LaCo pruning step as one call, used by the CLI and the bench."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict
from datetime import datetime, timezone

import torch

import laco
from laco import LacoError
from laco.calibration import text_record, tokenize
from laco.collapse import CollapseConfig, CollapseResult, collapse
from laco.loading import LoadedModel
from laco.merge import MERGE_MODES
from laco.provenance import device_info, fingerprint, git_commit, library_versions
from laco.surgery import decoder_layers, parameter_count


def layers_for_ratio(model, ratio: float) -> int:
    """Layer count whose removal comes closest to removing `ratio` of all parameters."""
    if not 0 < ratio < 1:
        raise LacoError(f"target ratio must lie in (0, 1), got {ratio}")
    layers = decoder_layers(model)
    per_layer = parameter_count(layers[0])
    removed = round(ratio * parameter_count(model) / per_layer)
    return max(1, len(layers) - removed)


def calibration_record(sentences: list[str], path: str | None) -> dict:
    """`file` (a path, or the description of where the texts came from), count and SHA-256 of the texts."""
    return text_record(sentences, path)


def prune_laco(
    loaded: LoadedModel,
    config: CollapseConfig,
    sentences: list[str],
    *,
    calibration_file: str | None = None,
    engine: str = "cached",
    target_layers: int | None = None,
    target_ratio: float | None = None,
    compare_engines: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> tuple[CollapseResult, dict]:
    """Collapse `loaded.model` in place; returns the search result and the provenance record."""
    torch.manual_seed(seed)  # nothing in LaCo is random; the seed is fixed and recorded anyway
    model = loaded.model
    if target_layers is not None and target_ratio is not None:
        raise LacoError("give either a target layer count or a target ratio, not both")
    target = None
    if target_ratio is not None:
        target_layers = layers_for_ratio(model, target_ratio)
        target = {"ratio": target_ratio, "layers": target_layers}
    elif target_layers is not None:
        target = {"layers": target_layers}
    device = next(model.parameters()).device
    batch = tokenize(loaded.tokenizer, sentences, device)
    params_before = parameter_count(model)

    comparison = None
    if compare_engines:
        naive_model = copy.deepcopy(model)
        naive = collapse(naive_model, batch, loaded.arch, config, engine="naive", target_layers=target_layers, progress=progress)
        del naive_model
    result = collapse(model, batch, loaded.arch, config, engine=engine, target_layers=target_layers, progress=progress)
    if compare_engines:
        comparison = compare_searches(naive, result)

    record = common_record(
        loaded, "laco", sentences, calibration_file, config=asdict(result.config), target=target,
        params_before=params_before, seed=seed,
    )
    record.update({
        "merge_mode": result.config.merge,
        "merge_mode_meaning": MERGE_MODES[result.config.merge].__doc__.strip().splitlines()[0],
        "engine": result.engine,
        "search_seconds": result.search_seconds,
        "engine_comparison": comparison,
        "n_layers_before": result.n_layers_before,
        "n_layers_after": result.n_layers_after,
        "layer_sources": result.layer_sources,
        "steps": [asdict(s) for s in result.steps],
        "threshold_search": result.threshold_search,
        "sliced_config_keys": result.sliced_config_keys,
    })
    record["fingerprint"] = pruned_fingerprint(record)
    return result, record


def parameter_record(before: int, after: int) -> dict:
    return {"before": before, "after": after, "kept_ratio": after / before, "pruning_ratio": 1 - after / before}


def common_record(
    loaded: LoadedModel,
    method: str,
    sentences: list[str],
    calibration_file: str | None,
    *,
    config: dict,
    target: dict | None,
    params_before: int,
    seed: int,
) -> dict:
    """The provenance fields every pruner records, taken after the pruning step: `config` holds the
    method's hyper-parameters, `target` what it was asked to reach."""
    model = loaded.model
    first = next(model.parameters())
    return {
        "laco_bench_version": laco.__version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "source": loaded.source.as_dict(),
        "source_fingerprint": loaded.source.fingerprint(),
        "config": config,
        "target": target,
        "calibration": calibration_record(sentences, calibration_file),
        "parameters": parameter_record(params_before, parameter_count(model)),
        "dtype": str(first.dtype).removeprefix("torch."),
        "seed": seed,
        "libraries": library_versions(),
        "device": device_info(first.device),
        "git_commit": git_commit(),
    }


def pruned_fingerprint(record: dict) -> str:
    """Identity of a pruned model: its source and everything that decided its weights."""
    return fingerprint({k: record[k] for k in ("source_fingerprint", "method", "config", "target", "calibration", "dtype")})


def compare_searches(naive: CollapseResult, cached: CollapseResult) -> dict:
    """Both engines on the same input, timed in one run."""
    decisions = lambda r: [(s.pointer, s.k, s.accepted) for s in r.steps]  # noqa: E731
    diffs = [abs(a.similarity - b.similarity) for a, b in zip(naive.steps, cached.steps)]
    return {
        "naive_seconds": naive.search_seconds,
        "cached_seconds": cached.search_seconds,
        "speedup": naive.search_seconds / cached.search_seconds,
        "same_decisions": decisions(naive) == decisions(cached),
        "max_similarity_difference": max(diffs, default=0.0),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
