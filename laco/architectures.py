"""Which tensors of a decoder layer the merge modes touch, per supported architecture.

Eq. 1 of the LaCo paper merges "attention and MLP weights". For every architecture below the
`merged` modules are the attention projections and the MLP projections: their `weight` and, where
present, their `bias`. The `kept` modules (the norms, including Qwen3's per-head q_norm/k_norm)
stay as they are in the base layer l. `check_layer` refuses a layer with a linear module the
table does not name, so a new variant can never be merged half-way without notice.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from laco import LacoError

_ATTENTION = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
_MLP = ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
_NORMS = ("input_layernorm", "post_attention_layernorm")


@dataclass(frozen=True)
class Architecture:
    model_type: str
    merged: tuple[str, ...]  # submodules whose weight (and bias, if any) a merge combines
    kept: tuple[str, ...]  # submodules the merged layer takes from the base layer unchanged
    needs_remote_code: bool = False


ARCHITECTURES: dict[str, Architecture] = {
    # Llama-2, SmolLM2: no biases.
    "llama": Architecture("llama", _ATTENTION + _MLP, _NORMS),
    # Mistral: as Llama; sliding-window attention changes no weight.
    "mistral": Architecture("mistral", _ATTENTION + _MLP, _NORMS),
    # Qwen2: q/k/v carry biases, merged with the weights by the same rule.
    "qwen2": Architecture("qwen2", _ATTENTION + _MLP, _NORMS),
    # Qwen3: per-head RMSNorms on queries and keys; they are norms, so layer l keeps its own.
    "qwen3": Architecture("qwen3", _ATTENTION + _MLP, _NORMS + ("self_attn.q_norm", "self_attn.k_norm")),
    # Baichuan2 (remote code): q/k/v packed in one W_pack projection.
    "baichuan": Architecture(
        "baichuan", ("self_attn.W_pack", "self_attn.o_proj") + _MLP, _NORMS, needs_remote_code=True
    ),
}


def architecture_of(config) -> Architecture:
    """The table entry for a transformers config, or a clear error naming the supported ones."""
    model_type = getattr(config, "model_type", None)
    try:
        return ARCHITECTURES[model_type]
    except KeyError:
        supported = ", ".join(sorted(ARCHITECTURES))
        raise LacoError(f"unsupported architecture {model_type!r}; supported: {supported}") from None


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
    """Refuse a layer whose linear modules differ from the table (an unknown variant)."""
    linears = {name for name, m in layer.named_modules() if isinstance(m, nn.Linear)}
    if linears != set(arch.merged):
        raise LacoError(
            f"{arch.model_type} layer has linear modules {sorted(linears)}, "
            f"expected {sorted(arch.merged)}: this variant is not supported"
        )
