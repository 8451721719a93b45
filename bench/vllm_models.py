"""vLLM models for the width baselines whose outputs no stock architecture describes.

Imported only inside the vLLM environment, by vLLM itself: `bench.vllm_worker.register_models`
(the `vllm.general_plugins` entry point the worker's path declares) registers these classes with
`ModelRegistry` by name, and vLLM imports this module in the process that builds the model.

Both are vLLM's own Llama (`LlamaForCausalLM`) with different decoder layers, built from vLLM's
layers (QKV / merged gate-up parallel linears, paged `Attention`, rotary embedding, RMSNorm), so
paged attention, batching and tensor parallelism work as for the stock model. Only the shapes,
and SliceGPT's shortcut, differ. The saved folder is what transformers and the project's loader
read; what the config cannot say comes in through `hf_overrides` (each pruner's `vllm_overrides`):

- LLM-Pruner (`laco.baselines.llm_pruner`): the layers differ in width. `laco_layer_widths`
  lists per layer {attention_heads, kv_heads, intermediate_size}; each layer is the stock vLLM
  layer built from a copy of the config carrying its own widths. vLLM sizes each layer's KV cache
  from its own attention module, as it does for models with per-layer head counts.
- SliceGPT (`laco.baselines.slicegpt`): the residual stream has the sliced width d' (the override
  sets hidden_size = d' and keeps head_dim), and each block's residual connection carries a
  d' x d' shortcut: h <- S_attn h + attn(norm(h)); h <- S_mlp h + mlp(norm(h)). The norms' weights
  (sqrt(d / d')) come from the checkpoint, so vLLM's RMSNorm over d' entries computes what the
  transformers model does.
"""

from __future__ import annotations

import copy

import torch
from vllm.config import VllmConfig
from vllm.model_executor.layers.linear import ReplicatedLinear
from vllm.model_executor.models.llama import LlamaDecoderLayer, LlamaForCausalLM
from vllm.model_executor.models.utils import extract_layer_index

WIDTHS_KEY = "laco_layer_widths"


def layer_config(config, widths: dict):
    """A copy of the model config with one layer's head counts and MLP width."""
    layer = copy.copy(config)
    layer.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    layer.num_attention_heads = widths["attention_heads"]
    layer.num_key_value_heads = widths["kv_heads"]
    layer.intermediate_size = widths["intermediate_size"]
    return layer


class PerLayerWidthDecoderLayer(LlamaDecoderLayer):
    """vLLM's Llama layer with the widths the config lists for this layer index."""

    def __init__(self, vllm_config: VllmConfig, prefix: str = "", config=None, **kwargs):
        config = config or vllm_config.model_config.hf_config
        widths = getattr(config, WIDTHS_KEY)[extract_layer_index(prefix)]
        super().__init__(vllm_config, prefix, config=layer_config(config, widths), **kwargs)


class LlmPrunerForCausalLM(LlamaForCausalLM):
    """An LLM-Pruner output: Llama whose layers differ in attention heads and MLP width."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        if not getattr(vllm_config.model_config.hf_config, WIDTHS_KEY, None):
            raise ValueError(f"{type(self).__name__} needs the per-layer widths in hf_overrides[{WIDTHS_KEY!r}]")
        super().__init__(vllm_config=vllm_config, prefix=prefix, layer_type=PerLayerWidthDecoderLayer)


class SlicedDecoderLayer(LlamaDecoderLayer):
    """vLLM's Llama layer in the sliced width, its residual connections through the shortcuts.

    vLLM's layers hand the stream on as (block output, residual) and add the two inside the next
    norm; here the residual handed on is the shortcut of the stream, S h, instead of h."""

    def __init__(self, vllm_config: VllmConfig, prefix: str = "", config=None, **kwargs):
        super().__init__(vllm_config, prefix, config=config, **kwargs)
        width = self.hidden_size
        self.attn_shortcut = ReplicatedLinear(width, width, bias=False, prefix=f"{prefix}.attn_shortcut")
        self.mlp_shortcut = ReplicatedLinear(width, width, bias=False, prefix=f"{prefix}.mlp_shortcut")

    def forward(self, positions: torch.Tensor, hidden_states: torch.Tensor,
                residual: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if residual is None:  # the first layer: the stream is the embedding output
            stream, normed = hidden_states, self.input_layernorm(hidden_states)
        else:
            normed, stream = self.input_layernorm(hidden_states, residual)
        attn_out = self.self_attn(positions=positions, hidden_states=normed)
        normed, stream = self.post_attention_layernorm(attn_out, self.attn_shortcut(stream)[0])
        return self.mlp(normed), self.mlp_shortcut(stream)[0]


class SliceGPTForCausalLM(LlamaForCausalLM):
    """A SliceGPT output: Llama in the sliced width (hidden_size = d') with shortcut rotations."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = ""):
        super().__init__(vllm_config=vllm_config, prefix=prefix, layer_type=SlicedDecoderLayer)
