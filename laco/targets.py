"""What a pruner is asked to reach: about a ratio of the parameters removed, or a layer count kept.

Parsed and checked here alone. A depth method keeps whole layers (`depth_target`); a width method
removes parameters (`parameter_target`), a layer target counting as the parameters of that many
decoder layers so that it can be matched to a depth method.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from laco import LacoError
from laco.surgery import decoder_layers, parameter_count


@dataclass(frozen=True)
class Target:
    ratio: float | None = None  # of all parameters, to remove
    layers: int | None = None  # decoder layers to keep


def parse_target(target_ratio: float | None, target_layers: int | None, *, required: bool = True) -> Target | None:
    """The target asked for, checked without the model: one of the two, a ratio in (0, 1). None when
    neither is given and the method may run without one."""
    if target_ratio is not None and target_layers is not None:
        raise LacoError("give either a target layer count or a target ratio, not both")
    if target_ratio is not None and not 0 < target_ratio < 1:
        raise LacoError(f"target ratio must lie in (0, 1), got {target_ratio}")
    if target_ratio is None and target_layers is None:
        if required:
            raise LacoError("this method needs a target: target_ratio or target_layers")
        return None
    return Target(target_ratio, target_layers)


def layers_for_ratio(model: nn.Module, ratio: float) -> int:
    """Layer count whose removal comes closest to removing `ratio` of all parameters."""
    layers = decoder_layers(model)
    removed = round(ratio * parameter_count(model) / parameter_count(layers[0]))
    return max(1, len(layers) - removed)


def _checked_layers(model: nn.Module, layers: int) -> int:
    n = len(decoder_layers(model))
    if not 1 <= layers <= n:
        raise LacoError(f"target of {layers} layers must lie in 1..{n}")
    return layers


def depth_target(model: nn.Module, target_ratio: float | None, target_layers: int | None, *,
                 required: bool = True) -> tuple[int | None, dict | None]:
    """Layers to keep, and the target as recorded. The granule is one layer. (None, None) when no
    target is given and none is `required` (LaCo then keeps what its threshold T decides)."""
    target = parse_target(target_ratio, target_layers, required=required)
    if target is None:
        return None, None
    if target.ratio is not None:
        keep = layers_for_ratio(model, target.ratio)
        return keep, {"ratio": target.ratio, "layers": keep}
    return _checked_layers(model, target.layers), {"layers": target.layers}


def parameter_target(model: nn.Module, target_ratio: float | None, target_layers: int | None) -> tuple[int, dict]:
    """Parameters to remove, and the target as recorded. A layer target counts as the parameters of
    that many decoder layers, so width methods can be matched to a depth method."""
    target = parse_target(target_ratio, target_layers)
    total = parameter_count(model)
    if target.ratio is not None:
        return round(target.ratio * total), {"ratio": target.ratio}
    layers = decoder_layers(model)
    removed = (len(layers) - _checked_layers(model, target.layers)) * parameter_count(layers[0])
    return removed, {"layers": target.layers, "ratio": removed / total}
