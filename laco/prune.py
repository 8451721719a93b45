"""Load -> collapse -> record: the LaCo pruning step as one call, used by the CLI and the bench."""

from __future__ import annotations

import copy
import time
from dataclasses import asdict

import torch

from laco import LacoError
from laco.calibration import tokenize
from laco.collapse import CollapseConfig, CollapseResult, collapse, make_config
from laco.loading import LoadedModel
from laco.merge import MERGE_MODES
from laco.record import PruneOutcome, build_record
from laco.surgery import parameter_count
from laco.targets import depth_target


def prune_laco(
    loaded: LoadedModel,
    config: CollapseConfig,
    sentences: list[str],
    *,
    calibration_file: str | dict | None = None,
    engine: str = "cached",
    target_layers: int | None = None,
    target_ratio: float | None = None,
    compare_engines: bool = False,
    seed: int = 0,
    progress: bool = True,
    method: str = "laco",
    **details,
) -> tuple[CollapseResult, dict]:
    """Collapse `loaded.model` in place; returns the search result and the record, as of the pruner
    `method` (laco, or drop for the search that deletes) with its `details` added."""
    torch.manual_seed(seed)  # nothing in LaCo is random; the seed is fixed and recorded anyway
    model = loaded.model
    target_layers, target = depth_target(model, target_ratio, target_layers, required=False)
    batch = tokenize(loaded.tokenizer, sentences, next(model.parameters()).device)
    params_before = parameter_count(model)

    def search(on, engine: str) -> CollapseResult:
        return collapse(on, batch, loaded.arch, config, engine=engine, target_layers=target_layers, progress=progress,
                        via=loaded if on is model else None)  # a streamed model gives its layers' weights through `loaded`

    naive = search(copy.deepcopy(model), "naive") if compare_engines else None
    result = search(model, engine)
    record = build_record(
        loaded, method, sentences, calibration=calibration_file, config=asdict(result.config), target=target,
        params_before=params_before, seed=seed, prune_seconds=result.search_seconds,
        **search_details(result, compare_searches(naive, result) if naive is not None else None), **details,
    )
    return result, record


def search_details(result: CollapseResult, comparison: dict | None) -> dict:
    """What the LaCo search adds to the record: its merge mode, engine, every step and the layers kept."""
    return {
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
    }


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


def laco_outcome(loaded, sentences: list[str], *, method: str = "laco", details: dict | None = None,
                 merge: str = "paper", paper_setting: str | None = None, hyper: dict | None = None,
                 **settings) -> PruneOutcome:
    """The LaCo search run as the pruner `method`; `hyper` holds C, L, H, I, T (None: the paper
    setting's or the default), `settings` the other keyword arguments of `prune_laco`."""
    given = {k: v for k, v in (hyper or {}).items() if v is not None}
    config = make_config(merge=merge, paper_setting_name=paper_setting,
                         n_layers=loaded.model.config.num_hidden_layers, **given)
    _, record = prune_laco(loaded, config, sentences, method=method, **settings, **(details or {}))
    return PruneOutcome(loaded.model, record)


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
    calibration_file: str | dict | None = None,
    seed: int = 0,
    progress: bool = True,
    **unknown,
) -> PruneOutcome:
    """LaCo; C, L, H, I, T override the paper setting or the defaults (None: keep them)."""
    if unknown:
        raise LacoError(f"unknown laco parameters: {', '.join(sorted(unknown))}")
    return laco_outcome(loaded, sentences, merge=merge, paper_setting=paper_setting,
                        hyper={"C": C, "L": L, "H": H, "I": I, "T": T}, engine=engine, compare_engines=compare_engines,
                        target_ratio=target_ratio, target_layers=target_layers, calibration_file=calibration_file,
                        seed=seed, progress=progress)


def peak_memory(shape, *, streamed: bool, merge: str = "paper", paper_setting: str | None = None, C: int | None = None,
                engine: str = "cached", compare_engines: bool = False, **_) -> dict[str, int] | None:
    """LaCo's memory formula (`memory_need`): `laco.collapse.collapse_memory` at this setting's C."""
    from laco.collapse import collapse_memory, paper_setting as setting

    C = C or (setting(paper_setting).C if paper_setting else 4)
    return collapse_memory(shape, streamed=streamed, C=C, merge=merge, naive=engine == "naive" or bool(compare_engines))


def prune_work(shape, *, merge: str = "paper", paper_setting: str | None = None, C: int | None = None,
               L: int | None = None, H: int | None = None, I: int | None = None, T: float | None = None,  # noqa: E741
               engine: str = "cached", compare_engines: bool = False, target_ratio: float | None = None,
               target_layers: int | None = None, **_):
    """LaCo's work (`laco.pruners.work_need`): `laco.work.collapse_work` at this setting; comparing
    the engines runs the naive one (every candidate whole) beside the cached one."""
    from laco.work import add, collapse_work

    config = make_config(merge=merge, paper_setting_name=paper_setting, n_layers=shape.n_layers,
                         **{k: v for k, v in {"C": C, "L": L, "H": H, "I": I, "T": T}.items() if v is not None})
    target = target_ratio is not None or target_layers is not None
    if engine == "naive":
        return collapse_work(shape, config, target=target, whole=True)
    cached = collapse_work(shape, config, target=target)
    return add(cached, collapse_work(shape, config, target=target, whole=True)) if compare_engines else cached
