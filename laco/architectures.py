"""What a decoder-only model is made of, read from the model itself rather than from a table of names.

`architecture_of(model)` walks the module tree once:
- the decoder layers: the one `nn.ModuleList` of `config.num_hidden_layers` entries that hold
  linear modules (its path, e.g. `model.layers`, and the module that owns it, the decoder);
- inside a layer, every `nn.Linear`, grouped by location: under an attention child (a name with
  `attn` or `attention`) or an MLP child (`mlp`, `ffn`, `feed_forward`). Eq. 1 of the LaCo paper
  merges "attention and MLP weights": a merge combines the `weight` and `bias` of all of them;
- the norms: modules whose own parameters are all 1-D scales (RMSNorm, LayerNorm of any family,
  Gemma's pre/post feed-forward norms, the q/k norms of Qwen3, Gemma 3 and OLMo 2). They are kept
  from the base layer l, never merged;
- the final norm after the last layer (a norm among the decoder's own children).

An architecture these rules cannot describe is refused before any weight is loaded
(`inspect_config` builds the model on the meta device), with one line naming what is missing.

Roles (`ROLES`) name what a projection computes; only the width baselines, which slice heads or
channels, need them. They are the one place where module names matter, and the packed
projections are the per-architecture overrides: their rows hold several roles at once.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from laco import LacoError

ATTENTION_WORDS = ("attn", "attention")
MLP_WORDS = ("mlp", "ffn", "feed_forward")

# Projection name (last path component) -> the roles its output rows hold, in order.
ROLES: dict[str, tuple[str, ...]] = {
    "q_proj": ("q",), "k_proj": ("k",), "v_proj": ("v",), "o_proj": ("o",),
    "gate_proj": ("gate",), "up_proj": ("up",), "down_proj": ("down",),
    "qkv_proj": ("q", "k", "v"),  # Phi-3: queries, keys and values stacked in one projection
    "W_pack": ("q", "k", "v"),  # Baichuan 2: the same packing under its own name
    "gate_up_proj": ("gate", "up"),  # Phi-3: gate and up stacked in one projection
}


@dataclass(frozen=True)
class Architecture:
    model_type: str
    layers_path: str  # the decoder layer list, e.g. "model.layers"
    attention: tuple[str, ...]  # linear modules of the attention block, relative to a layer
    mlp: tuple[str, ...]  # linear modules of the MLP block
    norms: tuple[str, ...]  # modules with 1-D parameters only, kept from the base layer
    final_norm: str  # relative to the decoder, e.g. "norm"
    needs_remote_code: bool = False
    cross_head_norms: tuple[str, ...] = ()  # norms inside attention wider than one head (OLMo 2's q/k norms)

    @property
    def merged(self) -> tuple[str, ...]:
        """Submodules whose weight (and bias, if any) a merge combines."""
        return self.attention + self.mlp

    @property
    def kept(self) -> tuple[str, ...]:
        """Submodules the merged layer takes from the base layer unchanged."""
        return self.norms

    @property
    def decoder_path(self) -> str:
        return self.layers_path.rpartition(".")[0]

    def packed(self) -> list[str]:
        """Projections whose rows hold more than one role (e.g. Phi-3's qkv_proj)."""
        return [p for p in self.merged if len(ROLES.get(p.rsplit(".", 1)[-1], ())) > 1]

    def by_role(self) -> dict[str, str]:
        """Role -> projection path, for architectures whose projections each hold one role."""
        out = {}
        for path in self.merged:
            for role in ROLES.get(path.rsplit(".", 1)[-1], ()):
                out[role] = path
        return out


def _is_norm(module: nn.Module) -> bool:
    own = list(module.parameters(recurse=False))
    return bool(own) and not isinstance(module, nn.Linear) and all(p.dim() == 1 for p in own)


def layer_list_path(model: nn.Module) -> str:
    """Path of the decoder layer list: the ModuleList of `num_hidden_layers` entries with parameters
    (among several, the one whose entries hold linear modules)."""
    n = getattr(model.config, "num_hidden_layers", None)
    found = [name for name, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and n and len(m) == n and all(any(True for _ in x.parameters()) for x in m)]
    if len(found) > 1:
        found = [name for name in found
                 if all(any(isinstance(x, nn.Linear) for x in layer.modules()) for layer in model.get_submodule(name))]
    if len(found) != 1:
        what = f"{len(found)} ({', '.join(found)})" if found else "none"
        raise LacoError(f"unsupported architecture {getattr(model.config, 'model_type', None)!r}: needs one list of "
                        f"{n} decoder layers (config.num_hidden_layers); found {what}")
    return found[0]


def final_norm_name(model: nn.Module) -> str:
    """The norm after the last layer: the one norm among the children of the module owning the layers."""
    path = layer_list_path(model)
    finals = [n for n, m in model.get_submodule(path.rpartition(".")[0]).named_children() if _is_norm(m)]
    if len(finals) != 1:
        raise LacoError(f"unsupported architecture {getattr(model.config, 'model_type', None)!r}: needs one final "
                        f"norm beside the layer list {path}; found {finals or 'none'}")
    return finals[0]


def architecture_of(model: nn.Module) -> Architecture:
    """The architecture of a causal LM, read from its modules (real or on the meta device)."""
    model_type = getattr(model.config, "model_type", None)

    def refuse(reason: str):
        raise LacoError(f"unsupported architecture {model_type!r}: {reason}")

    if getattr(model.config, "is_encoder_decoder", False):
        refuse("encoder-decoder models have no single decoder layer list to prune")
    layers_path = layer_list_path(model)
    layers = model.get_submodule(layers_path)
    layer = layers[0]
    attention, mlp, norms, other, outside = [], [], [], [], []
    for name, module in layer.named_modules():
        if not name:
            if list(module.parameters(recurse=False)):
                other.append(f"{type(module).__name__} itself")
            continue
        top = name.split(".")[0].lower()
        if isinstance(module, nn.Linear):
            group = attention if any(w in top for w in ATTENTION_WORDS) else mlp if any(w in top for w in MLP_WORDS) else outside
            group.append(name)
        elif _is_norm(module):
            norms.append(name)
        elif list(module.parameters(recurse=False)):
            other.append(f"{name} ({type(module).__name__})")
    if other:
        refuse(f"layer parameters outside linear and norm modules: {', '.join(other)}")
    if outside:
        refuse(f"linear modules outside the attention and MLP blocks: {', '.join(outside)}")
    if not attention or not mlp:
        refuse(f"no {'attention' if not attention else 'MLP'} linear modules found in {type(layer).__name__} "
               f"(children: {', '.join(n for n, _ in layer.named_children())})")
    remote = type(model).__module__.startswith("transformers_modules")
    arch = Architecture(model_type, layers_path, tuple(attention), tuple(mlp), tuple(norms), final_norm_name(model),
                        remote, tuple(_cross_head_norms(layer, norms)))
    for other_layer in layers:
        check_layer(arch, other_layer)
    return arch


def _cross_head_norms(layer: nn.Module, norms: list[str]) -> list[str]:
    """Norms inside the attention block whose scale is wider than the block's `head_dim`."""
    out = []
    for name in norms:
        top = name.split(".")[0]
        head_dim = getattr(layer.get_submodule(top), "head_dim", None)
        if any(w in top.lower() for w in ATTENTION_WORDS) and isinstance(head_dim, int):
            if next(layer.get_submodule(name).parameters(recurse=False)).numel() > head_dim:
                out.append(name)
    return out


def inspect_config(config, *, trust_remote_code: bool = False) -> Architecture:
    """The architecture of a config's causal LM, built on the meta device (no weights, no memory):
    lets a model the rules cannot handle fail before it is loaded."""
    from transformers import AutoModelForCausalLM

    try:
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(copy.deepcopy(config), trust_remote_code=trust_remote_code)
    except ValueError as exc:
        raise LacoError(f"unsupported architecture {getattr(config, 'model_type', None)!r}: not a causal LM "
                        f"transformers can build ({str(exc).splitlines()[0]})") from None
    return architecture_of(skeleton)


def merged_parameters(arch: Architecture, layer: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters a merge changes, by name relative to the layer (e.g. `mlp.up_proj.weight`)."""
    params = {}
    for path in arch.merged:
        module = layer.get_submodule(path)
        for pname in ("weight", "bias"):
            p = getattr(module, pname, None)
            if p is not None:
                params[f"{path}.{pname}"] = p
    return params


def check_layer(arch: Architecture, layer: nn.Module) -> None:
    """Refuse a layer whose linear modules differ from the architecture's (a variant inside one model)."""
    linears = {name for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
    if linears != set(arch.merged):
        raise LacoError(
            f"{arch.model_type} layer has linear modules {sorted(linears)}, "
            f"expected {sorted(arch.merged)}: this variant is not supported"
        )
