"""The merge modes: how layers l+1..l+K are folded into layer l before they are deleted.

All modes share one interface, `MERGE_MODES[name](arch, layers, base, k) -> layer`, which
returns the layer that replaces `layers[base]` (the inputs are never modified). The tensors a
mode touches are those `architectures.merged_parameters` names: the attention projections
(q, k, v, o; Baichuan's packed W_pack and o) and the MLP projections (gate, up, down), weights
and biases where present. Every other tensor of the layer, the norms (input_layernorm,
post_attention_layernorm, and Qwen3's q_norm/k_norm), comes from layer l unchanged.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn

from laco.architectures import Architecture, merged_parameters

MergeFn = Callable[[Architecture, Sequence[nn.Module], int, int], nn.Module]


@torch.no_grad()
def paper_merge(arch: Architecture, layers: Sequence[nn.Module], base: int, k: int) -> nn.Module:
    """Eq. 1 of the paper, literally: theta*_l = theta_l + sum_{i=1..K} (theta_{l+i} - theta_l).

    Accumulated in float32 and cast back, so a half-precision model does not lose the
    differences to rounding.
    """
    merged = copy.deepcopy(layers[base])
    targets = merged_parameters(arch, merged)
    for name, param in targets.items():
        theta_l = param.float()
        total = theta_l.clone()
        for i in range(1, k + 1):
            total += merged_parameters(arch, layers[base + i])[name].float() - theta_l
        param.copy_(total.to(param.dtype))
    return merged


@torch.no_grad()
def reference_merge(arch: Architecture, layers: Sequence[nn.Module], base: int, k: int) -> nn.Module:
    """What the authors' public notebook computes, in the model's own dtype.

    The notebook updates layer l in place, `theta += theta_{l+i} - theta` for i = 1..K, reading
    the already-updated theta each time; the sum telescopes, so the result is layer l+K's
    attention/MLP tensors (up to rounding) under layer l's norms. Kept as its own mode because
    it is what the published results were produced with.
    """
    merged = copy.deepcopy(layers[base])
    targets = merged_parameters(arch, merged)
    for name, param in targets.items():
        for i in range(1, k + 1):
            param.add_(merged_parameters(arch, layers[base + i])[name] - param)
    return merged


def drop_merge(arch: Architecture, layers: Sequence[nn.Module], base: int, k: int) -> nn.Module:
    """Plain deletion (paper appendix B.6): layer l stays as it is; l+1..l+K are deleted."""
    return layers[base]


MERGE_MODES: dict[str, MergeFn] = {
    "paper": paper_merge,
    "reference": reference_merge,
    "drop": drop_merge,
}


def merge_layers(mode: str, arch: Architecture, layers: Sequence[nn.Module], base: int, k: int, via=None) -> nn.Module:
    """`MERGE_MODES[mode]` on layers base..base+k, their weights read through `via` (a `LoadedModel`: a
    streamed model's layers are on disk until materialised). A deletion reads no weights."""
    merge = MERGE_MODES[mode]
    if via is None or merge is drop_merge:
        return merge(arch, layers, base, k)
    return merge(arch, [via.materialise(layer) for layer in layers[base : base + k + 1]], 0, k)
