"""Rule-based merging (LaCo paper, appendix B.7): LaCo's merge without its similarity check.

From the top of the model down, fixed groups of C adjacent layers are each merged into their
lowest layer (the merge mode of `laco.merge`, Eq. 1 by default), until the target layer count is
reached; the bottom half of the layers is never touched. The last group is smaller when the
target needs fewer than C - 1 more deletions, so the target is met exactly (one-layer granule).
"""

from __future__ import annotations

import time

from laco import LacoError
from laco.baselines.common import reject_unknown
from laco.collapse import CollapseConfig
from laco.memory import LAYER_CACHE
from laco.merge import MERGE_MODES, merge_layers
from laco.record import pruned
from laco.surgery import decoder_layers, parameter_count, set_layers
from laco.targets import depth_target


def groups_from_top(n_layers: int, n_remove: int, C: int) -> list[tuple[int, int]]:
    """(base, k) per group, top first: layers base..base+k become one; all above n_layers // 2."""
    groups, top, left = [], n_layers, n_remove
    while left > 0:
        k = min(C - 1, left)
        base = top - k - 1
        if base < n_layers // 2:
            raise LacoError(f"removing {n_remove} of {n_layers} layers with groups of C={C} reaches into the "
                            f"bottom half, which rule-based merging leaves alone")
        groups.append((base, k))
        top, left = base, left - k
    return groups


def peak_memory(shape, *, streamed: bool, C: int = 4, merge: str = "paper", **_) -> dict[str, int]:
    """No calibration forward. Each group reads its C layers and builds the merge; resident, every
    group's merge is held until the layers are replaced."""
    scratch = 4 * 4 * shape.largest_tensor_params if merge == "paper" else shape.largest_tensor_params * shape.dtype_bytes
    if streamed:
        return {"weights outside the layers": shape.non_layer_bytes, "layers in memory": (C + 1) * shape.layer_bytes,
                "merge scratch": scratch, LAYER_CACHE: 0}  # no forward: each layer is read once
    groups = -(-shape.n_layers // 2 // max(1, C - 1))  # at most the top half, C - 1 layers removed per group
    return {"weights": shape.weight_bytes, "merged layers": groups * shape.layer_bytes, "merge scratch": scratch}


def prune_work(shape, *, target_ratio: float | None = None, target_layers: int | None = None, C: int = 4,
               merge: str = "paper", **_):
    """No forward: each group's merge, elementwise."""
    from laco.work import Work, layers_removed, merge_traffic

    removed = layers_removed(shape, target_ratio, target_layers)
    groups = [min(C - 1, removed - done) for done in range(0, removed, max(1, C - 1))]
    return Work(0.0, memory_bytes=sum(merge_traffic(shape, k, merge) for k in groups))


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          C: int = 4, merge: str = "paper", calibration_file: str | dict | None = None, seed: int = 0,
          progress: bool = True, **unknown):
    reject_unknown("rule-merge", unknown)
    CollapseConfig(C=C, merge=merge).validate()  # the merge mode and group size as LaCo checks them
    model = loaded.model
    layers = list(decoder_layers(model))
    n = len(layers)
    keep, target = depth_target(model, target_ratio, target_layers)
    params_before = parameter_count(model)

    start = time.perf_counter()
    groups = groups_from_top(n, n - keep, C)
    merged = {base: loaded.adopt(merge_layers(merge, loaded.arch, layers, base, k, loaded), base, layers[base : base + k + 1])
              for base, k in groups}
    inside = {i for base, k in groups for i in range(base + 1, base + k + 1)}
    origin = [i for i in range(n) if i not in inside]
    set_layers(model, [merged.get(i, layers[i]) for i in origin], origin)
    seconds = time.perf_counter() - start

    sources = [[i] if i not in merged else list(range(i, i + dict(groups)[i] + 1)) for i in origin]
    return pruned(
        loaded, "rule-merge", sentences, calibration=calibration_file,
        config={"C": C, "merge": merge, "protected": f"layers 0..{n // 2 - 1} (the bottom half)"},
        target=target, params_before=params_before, seed=seed, prune_seconds=seconds,
        ablation="LaCo paper appendix B.7: fixed groups merged from the top, no similarity check",
        merge_mode=merge, merge_mode_meaning=MERGE_MODES[merge].__doc__.strip().splitlines()[0],
        n_layers_before=n, n_layers_after=len(origin), layer_sources=sources,
    )
