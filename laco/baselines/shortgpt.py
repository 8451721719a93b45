"""ShortGPT (Men et al., 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than
You Expect"): delete the layers of least Block Influence.

BI_i = 1 - cos(h_in, h_out) of layer i, averaged over the calibration tokens (padding excluded),
computed once on the dense model; the layers of lowest BI are deleted until the target layer
count is reached (one-layer granule).
"""

from __future__ import annotations

import time

from laco.baselines.common import layer_profile, reject_unknown, start_depth_pruning
from laco.memory import LAYER_CACHE
from laco.record import pruned
from laco.surgery import delete_layers


def peak_memory(shape, *, streamed: bool, **_) -> dict[str, int]:
    """One dense forward; per layer its input and output and float32 cosines are held."""
    parts = {"calibration states": 3 * shape.hidden_state_bytes + 2 * shape.tokens * shape.hidden * 4,
             "one layer's forward": shape.layer_activation_bytes()}
    if streamed:
        return {**parts, "weights outside the layers": shape.non_layer_bytes, "layers in memory": shape.layer_bytes,
                LAYER_CACHE: 0}  # one pass: no layer runs twice
    return {**parts, "weights": shape.weight_bytes}


def prune_work(shape, **_):
    """One dense pass over the calibration batch."""
    from laco.work import Work

    return Work(float(shape.n_layers))


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          calibration_file: str | dict | None = None, seed: int = 0, progress: bool = True, **unknown):
    reject_unknown("shortgpt", unknown)
    job = start_depth_pruning(loaded, sentences, target_ratio, target_layers)
    n = job.n_layers

    start = time.perf_counter()
    influence = layer_profile(job.model, job.batch).block_influence
    removed = sorted(sorted(range(n), key=influence.__getitem__)[: n - job.keep])
    sliced = delete_layers(job.model, removed)
    seconds = time.perf_counter() - start

    return pruned(
        loaded, "shortgpt", sentences, calibration=calibration_file,
        config={"metric": "block influence, 1 - cos(h_in, h_out), mean over non-padding calibration tokens"},
        target=job.target, params_before=job.params_before, seed=seed, prune_seconds=seconds,
        block_influence=influence, removed_layers=removed, n_layers_before=n, n_layers_after=n - len(removed),
        sliced_config_keys=sliced,
    )
