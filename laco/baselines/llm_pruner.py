"""LLM-Pruner, block-wise, without recovery tuning (Ma et al., NeurIPS 2023, "LLM-Pruner: On the
Structural Pruning of Large Language Models").

- Importance: first-order Taylor, |w * dL/dw| summed over every weight (and bias) of a coupled
  unit, with the gradients of the LM loss on the calibration sentences (padding masked out of
  the loss). This is LLM-Pruner's default (`--pruner_type taylor --taylor param_first`,
  group reduction by sum).
- Units: an attention unit is a whole KV group (its k/v rows, the rows of all query heads that
  share it, and their o_proj columns), as LLM-Pruner does for GQA models (rooted at k_proj); an
  MLP unit is one intermediate channel (gate/up rows, down_proj column).
- Layers: LLM-Pruner prunes layers 4..29 (`range(4, 30)`) of Llama-7B's 32 and keeps the rest;
  the range is scaled to the model's depth, round(4n/32)..round(30n/32), keeping at least the
  first and the last layer.
- Widths: like LLM-Pruner's local pruning, every pruned layer loses the same number of units.
  The target ratio is met by removing round(p * G) KV groups per layer, p being the fraction of
  the pruned layers' parameters the target needs, and as many MLP channels per layer as the rest
  of the target needs (granule: one MLP channel in every pruned layer).

The slicing is written here rather than taken from Torch-Pruning: Torch-Pruning traces the graph
and needs model-specific head counts; LLM-Pruner's GQA support lives in its own vendored fork of
it, and the stock package's LLM example breaks on attention modules that no longer carry
`num_key_value_heads` (Torch-Pruning issue #461), as transformers 5 modules do not. For these
layers the coupled slices are a few `index_select`s (`common.keep_attention_groups`).

The output keeps its first and last layers at full width, so its layers differ in width and a
transformers config (one width for all layers) cannot describe it: it reloads through `load`, and
vLLM serves it through the out-of-tree architecture of bench/vllm_models.py. When the range covers
every layer the widths are uniform and the config is updated instead; `uniform=True` asks for that
(every layer pruned alike, a deviation from the paper the record states), so stock transformers and
vLLM load the output.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from laco import LacoError
from laco.baselines.common import (
    AttentionLayout,
    calibration_batch,
    keep_attention_groups,
    keep_mlp_channels,
    load_restructured,
    loadable_out_of_tree,
    reject_unknown,
    require_llama_like,
)
from laco.record import STOCK_LOADABLE, pruned
from laco.surgery import decoder_layers, parameter_count
from laco.targets import parameter_target

LOADER = "laco.baselines.llm_pruner:load"
NOT_STOCK_REASON = ("layers differ in width (layers outside the pruned range keep full width); a config holds one "
                    "num_attention_heads / num_key_value_heads / intermediate_size for all layers")
# the out-of-tree vLLM model of bench/vllm_models.py, which reads the widths per layer
VLLM_ARCHITECTURE = "LacoLlmPrunerForCausalLM"
UNIFORM_DEVIATION = ("uniform: every layer pruned to the same width, so a stock config describes the output; "
                     "LLM-Pruner prunes only layers 4..30 of Llama-7B's 32 and keeps the others at full width")


def default_range(n_layers: int) -> tuple[int, int]:
    """LLM-Pruner's 4..30 of 32 layers scaled to n layers, the first and the last always kept."""
    return max(1, round(4 * n_layers / 32)), min(n_layers - 1, round(30 * n_layers / 32))


def taylor_importance(model: nn.Module, batch: dict, layer_ids: range) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer: (importance of each KV group, importance of each MLP channel)."""
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    was_trainable = {p: p.requires_grad for p in model.parameters()}
    for p in model.parameters():
        p.requires_grad_(True)
    model.zero_grad(set_to_none=True)
    try:
        with torch.enable_grad():
            model(**batch, labels=labels, use_cache=False).loss.backward()
        scores = {}
        layers = decoder_layers(model)
        for i in layer_ids:
            attn, mlp = layers[i].self_attn, layers[i].mlp
            G = AttentionLayout.of(attn).kv_heads
            groups = sum(out_salience(getattr(attn, n)).view(G, -1).sum(1) for n in ("q_proj", "k_proj", "v_proj"))
            groups = groups + in_salience(attn.o_proj).view(G, -1).sum(1)
            channels = out_salience(mlp.gate_proj) + out_salience(mlp.up_proj) + in_salience(mlp.down_proj)
            scores[i] = (groups, channels)
        return scores
    finally:
        model.zero_grad(set_to_none=True)
        for p, flag in was_trainable.items():
            p.requires_grad_(flag)


def out_salience(linear: nn.Linear) -> torch.Tensor:
    """|w * grad| summed per output row (bias included)."""
    s = (linear.weight * linear.weight.grad).abs().float().sum(1)
    return s + (linear.bias * linear.bias.grad).abs().float() if linear.bias is not None else s


def in_salience(linear: nn.Linear) -> torch.Tensor:
    """|w * grad| summed per input column."""
    return (linear.weight * linear.weight.grad).abs().float().sum(0)


def unit_sizes(layer: nn.Module) -> tuple[int, int, int, int]:
    """(KV groups, parameters per KV group, MLP channels, parameters per MLP channel) of a layer."""
    attn, mlp = layer.self_attn, layer.mlp
    G = AttentionLayout.of(attn).kv_heads
    per_group = sum(parameter_count(getattr(attn, n)) for n in ("q_proj", "k_proj", "v_proj")) // G
    per_group += attn.o_proj.weight.numel() // G
    width = mlp.down_proj.in_features
    per_channel = (parameter_count(mlp.gate_proj) + parameter_count(mlp.up_proj)) // width + mlp.down_proj.out_features
    return G, per_group, width, per_channel


def plan_widths(layer: nn.Module, n_pruned: int, budget: int) -> tuple[int, int]:
    """(KV groups, MLP channels) to remove from every pruned layer to remove about `budget` parameters."""
    G, per_group, width, per_channel = unit_sizes(layer)
    p = budget / (n_pruned * (G * per_group + width * per_channel))
    if p >= 1:
        raise LacoError(f"removing {budget} parameters needs more than all the attention and MLP weights of the "
                        f"{n_pruned} pruned layers")
    groups = min(G - 1, round(p * G))
    while groups > 0 and n_pruned * groups * per_group > budget:
        groups -= 1
    channels = round((budget - n_pruned * groups * per_group) / (n_pruned * per_channel))
    return groups, min(width - 1, channels)


def widths(model: nn.Module) -> list[dict]:
    out = []
    for layer in decoder_layers(model):
        layout = AttentionLayout.of(layer.self_attn)
        out.append({"kv_heads": layout.kv_heads, "attention_heads": layout.kv_heads * layout.queries_per_kv,
                    "intermediate_size": layer.mlp.down_proj.in_features})
    return out


def peak_memory(shape, *, streamed: bool, **_) -> dict[str, int] | None:
    """Taylor importance needs the gradient of every weight from one backward pass over the calibration
    batch: the weights, as many gradients, and the activations the backward keeps. It cannot stream."""
    if streamed:
        return None
    per_layer = shape.tokens * (10 * shape.hidden + 5 * shape.intermediate) * shape.dtype_bytes
    attention = 2 * shape.batch * shape.heads * shape.seq * shape.seq * 4
    return {"weights": shape.weight_bytes, "gradients": shape.weight_bytes,
            "activations": shape.n_layers * (per_layer + attention) + 3 * shape.tokens * shape.vocab * 4}


def prune_work(shape, **_):
    """One forward and one backward of the whole model over the calibration batch (a backward costs
    about two forwards), the head's included over every token; then the weights, their gradients and
    the pruned copies pass through memory a few times."""
    from laco.work import Work

    head = 2 * shape.tokens * shape.vocab * shape.hidden
    return Work(3.0 * shape.n_layers, flops=3 * head, memory_bytes=4 * shape.weight_bytes)


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          layer_start: int | None = None, layer_end: int | None = None, uniform: bool = False,
          calibration_file: str | dict | None = None, seed: int = 0, progress: bool = True, **unknown):
    """`layer_start`..`layer_end` (end exclusive) overrides the scaled default range; `uniform`
    prunes every layer alike (a stock-shaped output, recorded as a deviation from the paper)."""
    reject_unknown("llm-pruner", unknown)
    require_llama_like(loaded.arch, "llm-pruner")
    if uniform and (layer_start is not None or layer_end is not None):
        raise LacoError("uniform prunes every layer: give no layer_start / layer_end with it")
    torch.manual_seed(seed)
    model = loaded.model
    layers = decoder_layers(model)
    n = len(layers)
    start_default, end_default = (0, n) if uniform else default_range(n)
    start, end = layer_start if layer_start is not None else start_default, layer_end if layer_end is not None else end_default
    if not 0 <= start < end <= n:
        raise LacoError(f"layer range {start}..{end} does not fit {n} layers")
    budget, target = parameter_target(model, target_ratio, target_layers)
    batch = calibration_batch(loaded, sentences)
    params_before = parameter_count(model)

    began = time.perf_counter()
    scores = taylor_importance(model, batch, range(start, end))
    drop_groups, drop_channels = plan_widths(layers[start], end - start, budget)
    for i, (groups, channels) in scores.items():
        keep_attention_groups(layers[i].self_attn, torch.topk(groups, len(groups) - drop_groups).indices.sort().values.cpu())
        keep_mlp_channels(layers[i].mlp, torch.topk(channels, len(channels) - drop_channels).indices.sort().values.cpu())
    seconds = time.perf_counter() - began

    layer_widths = widths(model)
    same_widths = config_for_uniform_widths(model, layer_widths)
    return pruned(
        loaded, "llm-pruner", sentences, calibration=calibration_file,
        config={"importance": "taylor param_first: sum of |w * grad| over a unit, LM loss on the calibration set",
                "units": "attention: whole KV groups with their query heads; MLP: intermediate channels",
                "layer_range": [start, end], "uniform": uniform, "recovery_tuning": False},
        target=target, params_before=params_before, seed=seed, prune_seconds=seconds,
        layer_range_rule="LLM-Pruner prunes range(4, 30) of Llama-7B's 32 layers; scaled: "
                         "round(4n/32)..round(30n/32), the first and last layer kept",
        removed_per_layer={"kv_groups": drop_groups, "mlp_channels": drop_channels},
        granule_parameters=(end - start) * unit_sizes(layers[0])[3],
        layer_widths=layer_widths,
        **({"deviation": UNIFORM_DEVIATION} if uniform else {}),
        loader="transformers" if same_widths else LOADER,
        loadable=STOCK_LOADABLE if same_widths else loadable_out_of_tree(loaded.arch, NOT_STOCK_REASON, VLLM_ARCHITECTURE),
    )


def config_for_uniform_widths(model: nn.Module, layer_widths: list[dict]) -> bool:
    """When every layer was pruned alike, a standard config describes the model: set it; say whether so."""
    if any(w != layer_widths[0] for w in layer_widths):
        return False
    cfg, w = model.config, layer_widths[0]
    cfg.head_dim = AttentionLayout.of(decoder_layers(model)[0].self_attn).head_dim
    cfg.num_attention_heads, cfg.num_key_value_heads = w["attention_heads"], w["kv_heads"]
    cfg.intermediate_size = w["intermediate_size"]
    return True


def restructure(model: nn.Module, record: dict) -> None:
    """Give every layer the widths the record lists (weights follow from the checkpoint)."""
    for layer, w in zip(decoder_layers(model), record["layer_widths"], strict=True):
        keep_attention_groups(layer.self_attn, torch.arange(w["kv_heads"]))
        keep_mlp_channels(layer.mlp, torch.arange(w["intermediate_size"]))


def load(folder, *, dtype: str = "float32", device: str = "cpu"):
    """Reload an LLM-Pruner output whose layers differ in width: (model, tokenizer, record)."""
    return load_restructured(folder, dtype=dtype, device=device, restructure=restructure)


def vllm_overrides(record: dict, folder) -> dict | None:
    """What vLLM must be told beyond the saved config to serve this output (laco.pruners.vllm_overrides_for):
    nothing when every layer kept one width, else the out-of-tree architecture and the per-layer widths."""
    if record.get("loader") != LOADER:
        return None
    return {"architectures": [VLLM_ARCHITECTURE], "laco_layer_widths": record["layer_widths"]}
