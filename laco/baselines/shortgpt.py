"""ShortGPT (Men et al., 2024, "ShortGPT: Layers in Large Language Models are More Redundant Than
You Expect"): delete the layers of least Block Influence.

BI_i = 1 - cos(h_in, h_out) of layer i, averaged over the calibration tokens (padding excluded),
computed once on the dense model; the layers of lowest BI are deleted until the target layer
count is reached (one-layer granule).
"""

from __future__ import annotations

import time

from laco.baselines.common import calibration_batch, depth_target, layer_profile, outcome, reject_unknown
from laco.surgery import decoder_layers, delete_layers, parameter_count


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          calibration_file: str | None = None, seed: int = 0, progress: bool = True, **unknown):
    reject_unknown("shortgpt", unknown)
    model = loaded.model
    n = len(decoder_layers(model))
    keep, target = depth_target(model, target_ratio, target_layers)
    batch = calibration_batch(loaded, sentences)
    params_before = parameter_count(model)

    start = time.perf_counter()
    influence = layer_profile(model, batch).block_influence
    removed = sorted(sorted(range(n), key=influence.__getitem__)[: n - keep])
    sliced = delete_layers(model, removed)
    seconds = time.perf_counter() - start

    return outcome(
        loaded, "shortgpt", sentences, calibration_file=calibration_file,
        config={"metric": "block influence, 1 - cos(h_in, h_out), mean over non-padding calibration tokens"},
        target=target, params_before=params_before, seed=seed, seconds=seconds,
        block_influence=influence, removed_layers=removed, n_layers_before=n, n_layers_after=n - len(removed),
        sliced_config_keys=sliced,
    )
