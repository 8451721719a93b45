"""What the baselines share: calibration statistics, slicing of linear layers, and reloading outputs
whose shapes differ from their config. Targets live in `laco.targets`, the record in `laco.record`."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from laco import LacoError
from laco.architectures import Architecture
from laco.calibration import tokenize
from laco.surgery import decoder, decoder_layers, parameter_count
from laco.targets import depth_target

LLAMA_LIKE = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
              "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def reject_unknown(method: str, unknown: dict) -> None:
    if unknown:
        raise LacoError(f"unknown {method} parameters: {', '.join(sorted(unknown))}")


def require_llama_like(arch: Architecture, method: str) -> None:
    """Methods that slice or mix heads and channels address q/k/v/o and gate/up/down as separate
    modules under `self_attn` and `mlp`, and need each kept head to compute as it did alone."""
    packed = arch.packed()
    if packed:
        raise LacoError(f"{method} slices heads and channels of separate projections; {arch.model_type} packs "
                        f"several into {', '.join(packed)}")
    if set(arch.merged) != set(LLAMA_LIKE):
        raise LacoError(f"{method} supports separate q/k/v/o and gate/up/down projections; "
                        f"{arch.model_type} has {', '.join(arch.merged)}")
    if arch.cross_head_norms:
        raise LacoError(f"{method} removes or mixes attention heads; {arch.model_type}'s "
                        f"{', '.join(arch.cross_head_norms)} normalise across all heads, so every kept head would change")


def calibration_batch(loaded, sentences: list[str]) -> dict:
    return tokenize(loaded.tokenizer, sentences, next(loaded.model.parameters()).device)


@dataclass(frozen=True)
class DepthStart:
    """What a calibration-driven depth baseline knows before it removes a layer."""

    model: nn.Module
    n_layers: int
    keep: int
    target: dict
    batch: dict
    params_before: int


def start_depth_pruning(loaded, sentences: list[str], target_ratio: float | None,
                        target_layers: int | None) -> DepthStart:
    model = loaded.model
    keep, target = depth_target(model, target_ratio, target_layers)
    return DepthStart(model, len(decoder_layers(model)), keep, target, calibration_batch(loaded, sentences),
                      parameter_count(model))


# ---- calibration statistics ---------------------------------------------------------------------

def token_cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    return (values * mask).sum().item() / mask.sum().item()


@dataclass
class LayerProfile:
    """Statistics of one forward over the calibration tokens (padding excluded).

    block_influence[i]: mean over tokens of 1 - cos(input of layer i, output of layer i) (ShortGPT).
    pair_distance[i]: mean over tokens of arccos(cos(input of layer i, output of layer i+1)) / pi,
        the angular distance across the adjacent pair (i, i+1).
    channels[i]: {"o_proj": mean |input| per channel, "down_proj": the same} when asked for.
    """

    block_influence: list[float]
    pair_distance: list[float]
    channels: list[dict[str, torch.Tensor]] = field(default_factory=list)


@torch.no_grad()
def layer_profile(model: nn.Module, batch: dict, *, channels: bool = False) -> LayerProfile:
    """One forward with hooks; statistics are accumulated on the fly, nothing per token is kept."""
    layers = decoder_layers(model)
    mask = batch["attention_mask"].to(torch.float32)
    inputs: list[torch.Tensor] = []
    influence: list[float] = []
    distance: list[float] = []
    stats: list[dict[str, torch.Tensor]] = [{} for _ in layers]

    def on_layer(module, args, kwargs, output):
        h_in = args[0] if args else kwargs["hidden_states"]
        h_out = output[0] if isinstance(output, tuple) else output
        influence.append(masked_mean(1 - token_cosine(h_in, h_out), mask))
        if inputs:
            cos = token_cosine(inputs[-1], h_out).clamp(-1, 1)
            distance.append(masked_mean(torch.arccos(cos) / math.pi, mask))
        inputs[:] = [h_in]

    def channel_hook(i: int, name: str):
        def hook(module, args):
            x = args[0].float().abs() * mask.unsqueeze(-1)
            stats[i][name] = x.sum(dim=(0, 1)) / mask.sum()
        return hook

    handles = [layer.register_forward_hook(on_layer, with_kwargs=True) for layer in layers]
    if channels:
        for i, layer in enumerate(layers):
            handles.append(layer.self_attn.o_proj.register_forward_pre_hook(channel_hook(i, "o_proj")))
            handles.append(layer.mlp.down_proj.register_forward_pre_hook(channel_hook(i, "down_proj")))
    try:
        decoder(model)(**batch, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return LayerProfile(influence, distance, stats if channels else [])


# ---- slicing ------------------------------------------------------------------------------------

def sliced_linear(linear: nn.Linear, *, rows: torch.Tensor | None = None, cols: torch.Tensor | None = None) -> nn.Linear:
    """A new linear layer holding the chosen output rows and input columns of `linear`."""
    weight = linear.weight.detach()
    if rows is not None:
        weight = weight.index_select(0, rows.to(weight.device))
    if cols is not None:
        weight = weight.index_select(1, cols.to(weight.device))
    bias = linear.bias
    out = nn.utils.skip_init(nn.Linear, weight.shape[1], weight.shape[0], bias=bias is not None,
                             device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        if bias is not None:
            out.bias.copy_(bias.detach() if rows is None else bias.detach().index_select(0, rows.to(bias.device)))
    return out


@dataclass(frozen=True)
class AttentionLayout:
    """Head counts of one attention module, read from its tensors (pruned layers differ)."""

    head_dim: int
    kv_heads: int
    queries_per_kv: int

    @classmethod
    def of(cls, attn: nn.Module) -> AttentionLayout:
        head_dim = attn.head_dim
        kv = attn.k_proj.out_features // head_dim
        return cls(head_dim, kv, attn.q_proj.out_features // head_dim // kv)

    def query_channels(self, groups: torch.Tensor) -> torch.Tensor:
        """q_proj rows (= o_proj columns) of the query heads of these KV groups. transformers pairs
        query head h with KV head h // queries_per_kv, so a group's query heads are consecutive."""
        span = self.queries_per_kv * self.head_dim
        return (groups.view(-1, 1) * span + torch.arange(span)).flatten()

    def kv_channels(self, groups: torch.Tensor) -> torch.Tensor:
        return (groups.view(-1, 1) * self.head_dim + torch.arange(self.head_dim)).flatten()


def keep_attention_groups(attn: nn.Module, groups: torch.Tensor) -> None:
    """Keep only these KV groups (and their query heads) of `attn`, in the given order."""
    layout = AttentionLayout.of(attn)
    q, kv = layout.query_channels(groups), layout.kv_channels(groups)
    attn.q_proj = sliced_linear(attn.q_proj, rows=q)
    attn.k_proj = sliced_linear(attn.k_proj, rows=kv)
    attn.v_proj = sliced_linear(attn.v_proj, rows=kv)
    attn.o_proj = sliced_linear(attn.o_proj, cols=q)


def keep_mlp_channels(mlp: nn.Module, channels: torch.Tensor) -> None:
    mlp.gate_proj = sliced_linear(mlp.gate_proj, rows=channels)
    mlp.up_proj = sliced_linear(mlp.up_proj, rows=channels)
    mlp.down_proj = sliced_linear(mlp.down_proj, cols=channels)


# ---- reloading -----------------------------------------------------------------------------------

def loadable_out_of_tree(arch: Architecture, reason: str, vllm_architecture: str) -> dict:
    """`loadable` of an output stock transformers cannot load: the project's loader reloads it, and
    vLLM serves it through `vllm_architecture`, an out-of-tree model of bench/vllm_models.py built
    on vLLM's Llama (so for Llama-architecture models only)."""
    vllm = arch.model_type == "llama"
    served = (f"; vLLM serves it through the registered architecture {vllm_architecture}" if vllm else
              f"; vLLM's out-of-tree {vllm_architecture} is built on Llama, not {arch.model_type}")
    return {"transformers": False, "vllm": vllm, "reason": reason + served}


def load_restructured(folder, *, dtype: str, device: str, restructure: Callable[[nn.Module, dict], None]):
    """Reload an output whose tensors do not fit its config: build the model from the config, let
    `restructure(model, record)` give its modules the saved shapes, then load the weights strictly
    (only tied copies may be absent)."""
    from pathlib import Path

    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from laco.loading import DTYPES
    from laco.saving import read_provenance

    record = read_provenance(folder)
    config = AutoConfig.from_pretrained(folder)
    model = AutoModelForCausalLM.from_config(config, dtype=DTYPES[dtype] if dtype != "auto" else None)
    restructure(model, record)
    state = {}
    for file in sorted(Path(folder).glob("*.safetensors")):
        state.update(load_file(file))
    missing, unexpected = model.load_state_dict(state, strict=False)
    tied = {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()
    if unexpected or set(missing) - tied:
        raise LacoError(f"{folder}: weights do not fit the recorded structure "
                        f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    if tied:
        model.tie_weights()
    model.to(device).eval()
    return model, AutoTokenizer.from_pretrained(folder), record
