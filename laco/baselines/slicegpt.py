"""SliceGPT (Ashkboos et al., ICLR 2024, "SliceGPT: Compress Large Language Models by Deleting Rows
and Columns"): rotate the residual stream by PCA, then slice its width.

1. Norm folding: the scale of every RMSNorm moves into the columns of the linear layers it
   feeds (q/k/v, gate/up, lm_head), leaving scale-free norms, which commute with rotations.
   Tied embeddings are untied first: the input side is rotated by the first basis and the
   output side by the last, so one matrix cannot serve both.
2. Rotation: at each point where the residual stream enters a block (embeddings -> attention,
   attention -> MLP, MLP -> next layer) the calibration signals (padding excluded) give
   C = sum x x^T in float64, damped by 0.01 * mean(diag C); its leading eigenvectors Q (d x d')
   form the new basis. Signals are taken sequentially from the partly sliced model, as in the
   paper, so later bases see the earlier slicing.
3. Slicing: a block reads its input through W Q_in and writes its output through Q_out^T W; the
   residual connection carries the stream from one basis to the next through the shortcut
   Q_in^T Q_out (d' x d', one per attention and MLP block). Every basis keeps d' columns; d' is
   chosen so the parameter count (shortcuts and the untied head included) comes closest to the
   target (granule: one hidden dimension), or given as `slicing` = 1 - d'/d.
4. Norms over d' dimensions: a norm on the sliced stream must divide by sqrt(sum x^2 / d), not
   by the mean over d' entries; its weight is set to sqrt(d / d') (the eps term scales by d'/d,
   negligible).

With d' = d nothing is sliced and the model computes the same function (tests check it).

Calibration size matters: with fewer calibration tokens than d' the PCA has lower rank than the
basis it must fill, and the remaining directions are arbitrary; the record says so
(`calibration_warning`). The project's default ten sentences (about 200 tokens on SmolLM2) are
far below SliceGPT's own calibration (WikiText-2 training sequences of 2048 tokens in its paper).

The blocks work in a width d' < config.hidden_size and carry shortcut matrices the Llama/Qwen
architectures do not have, so stock transformers cannot load the output: `load` rebuilds the
structure from the record, and vLLM serves it through the out-of-tree architecture of
bench/vllm_models.py (Llama models).
"""

from __future__ import annotations

import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from laco import LacoError
from laco.baselines.common import (
    calibration_batch,
    load_restructured,
    loadable_out_of_tree,
    outcome,
    parameter_target,
    reject_unknown,
    require_llama_like,
)
from laco.collapse import DenseTrace, _attention_type
from laco.surgery import decoder_layers, parameter_count

LOADER = "laco.baselines.slicegpt:load"
NOT_STOCK_REASON = ("blocks run in a sliced width d' < config.hidden_size and every residual connection carries a "
                    "d' x d' shortcut rotation, which the stock Llama/Qwen architectures lack")
# the out-of-tree vLLM model of bench/vllm_models.py: Llama in the sliced width, with the shortcuts
VLLM_ARCHITECTURE = "LacoSliceGPTForCausalLM"

BLOCK_INPUTS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "mlp.gate_proj", "mlp.up_proj")
BLOCK_OUTPUTS = ("self_attn.o_proj", "mlp.down_proj")


class SlicedDecoderLayer(nn.Module):
    """A pre-norm decoder layer whose residual stream changes basis at each block:
    h = h S_attn + attn(norm(h)); h = h S_mlp + mlp(norm(h)). `S` is stored as a bias-free
    linear layer (weight = S^T)."""

    def __init__(self, layer: nn.Module, width: int):
        super().__init__()
        self.self_attn, self.mlp = layer.self_attn, layer.mlp
        self.input_layernorm, self.post_attention_layernorm = layer.input_layernorm, layer.post_attention_layernorm
        weight = layer.input_layernorm.weight
        self.attn_shortcut = nn.Linear(width, width, bias=False, device=weight.device, dtype=weight.dtype)
        self.mlp_shortcut = nn.Linear(width, width, bias=False, device=weight.device, dtype=weight.dtype)
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type

    def forward(self, hidden_states, attention_mask=None, position_ids=None, past_key_values=None,
                use_cache=False, position_embeddings=None, **kwargs):
        attn_out, _ = self.self_attn(
            hidden_states=self.input_layernorm(hidden_states), attention_mask=attention_mask,
            position_ids=position_ids, past_key_values=past_key_values, use_cache=use_cache,
            position_embeddings=position_embeddings, **kwargs,
        )
        hidden_states = self.attn_shortcut(hidden_states) + attn_out
        return self.mlp_shortcut(hidden_states) + self.mlp(self.post_attention_layernorm(hidden_states))


# ---- weight transforms (float64, cast back) -----------------------------------------------------

def set_linear(linear: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
    dtype = linear.weight.dtype
    linear.weight = nn.Parameter(weight.to(dtype).contiguous())
    linear.out_features, linear.in_features = weight.shape
    if bias is not None:
        linear.bias = nn.Parameter(bias.to(dtype).contiguous())


def read_through(linear: nn.Linear, basis: torch.Tensor) -> None:
    """The linear now reads the stream in the basis: W <- W Q."""
    set_linear(linear, linear.weight.double() @ basis)


def write_into(linear: nn.Linear, basis: torch.Tensor) -> None:
    """The linear now writes into the basis: W <- Q^T W, b <- Q^T b."""
    bias = basis.T @ linear.bias.double() if linear.bias is not None else None
    set_linear(linear, basis.T @ linear.weight.double(), bias)


def set_norm(norm: nn.Module, width: int, hidden: int) -> None:
    """A scale-free RMSNorm over `width` entries that divides by the mean over `hidden`."""
    norm.weight = nn.Parameter(torch.full((width,), math.sqrt(hidden / width), dtype=norm.weight.dtype,
                                          device=norm.weight.device))


@torch.no_grad()
def untie_and_fold_norms(model: nn.Module) -> bool:
    """Untie the output embedding if tied, then fold every RMSNorm scale into the linears it feeds.
    Returns whether the embeddings were tied."""
    embed, head = model.model.embed_tokens, model.lm_head
    tied = head.weight is embed.weight or bool(getattr(model.config, "tie_word_embeddings", False))
    if tied:
        head.weight = nn.Parameter(embed.weight.detach().clone())
        model.config.tie_word_embeddings = False
    feeds = [(layer.input_layernorm, [layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj])
             for layer in decoder_layers(model)]
    feeds += [(layer.post_attention_layernorm, [layer.mlp.gate_proj, layer.mlp.up_proj]) for layer in decoder_layers(model)]
    feeds.append((model.model.norm, [head]))
    for norm, linears in feeds:
        for linear in linears:
            linear.weight.mul_(norm.weight.to(linear.weight.dtype))
        norm.weight.fill_(1.0)
    return tied


def pca_basis(signal: torch.Tensor, mask: torch.Tensor, width: int, damping: float) -> tuple[torch.Tensor, float]:
    """Leading `width` eigenvectors (d x width) of the damped second-moment matrix of the non-padding
    rows of `signal`, and the fraction of the (undamped) energy they keep."""
    x = signal.double()[mask.bool()]
    cov = x.T @ x
    energy = cov.diagonal().sum()
    damped = cov + damping * cov.diagonal().mean() * torch.eye(cov.shape[0], dtype=cov.dtype, device=cov.device)
    values, vectors = torch.linalg.eigh(damped)
    order = values.argsort(descending=True)[:width]
    basis = vectors[:, order]
    kept = ((x @ basis).pow(2).sum() / energy).item() if energy > 0 else 1.0
    return basis, kept


# ---- sizes --------------------------------------------------------------------------------------

def sliced_parameter_count(model: nn.Module, width: int) -> int:
    """Parameters after slicing the (folded, untied) model to `width`: computed from the shapes."""
    embed, head = model.model.embed_tokens, model.lm_head
    count = embed.num_embeddings * width + head.out_features * width + width  # embeddings, head, final norm
    count += head.bias.numel() if head.bias is not None else 0
    for layer in decoder_layers(model):
        touched = 0
        for name in BLOCK_INPUTS:
            linear = layer.get_submodule(name)
            bias = linear.bias.numel() if linear.bias is not None else 0
            count += linear.out_features * width + bias
            touched += parameter_count(linear)
        for name in BLOCK_OUTPUTS:
            linear = layer.get_submodule(name)
            count += width * linear.in_features + (width if linear.bias is not None else 0)
            touched += parameter_count(linear)
        touched += parameter_count(layer.input_layernorm) + parameter_count(layer.post_attention_layernorm)
        count += 2 * width + 2 * width * width + parameter_count(layer) - touched  # norms, shortcuts, the rest
    return count


def width_for_target(model: nn.Module, target_after: int) -> int:
    """The width whose parameter count comes closest to `target_after`. The count is quadratic in
    the width (the shortcuts), so three evaluations give it for every width."""
    hidden = model.model.embed_tokens.embedding_dim
    c0, c1, c2 = (sliced_parameter_count(model, w) for w in (0, 1, 2))
    quad = (c2 - 2 * c1 + c0) // 2
    count = lambda w: c0 + (c1 - c0 - quad) * w + quad * w * w  # noqa: E731
    return min(range(1, hidden + 1), key=lambda w: abs(count(w) - target_after))


# ---- the pruner ---------------------------------------------------------------------------------

@torch.no_grad()
def rotate_and_slice(model: nn.Module, batch: dict, width: int, damping: float, progress: bool = False) -> list[float]:
    """Steps 2-4 on a folded model; returns the energy fraction each basis keeps."""
    hidden = model.model.embed_tokens.embedding_dim
    mask = batch["attention_mask"]
    trace = DenseTrace(model, batch)
    dtype = trace.inputs[0].dtype
    kept: list[float] = []

    basis, k = pca_basis(trace.inputs[0], mask, width, damping)
    kept.append(k)
    embed = model.model.embed_tokens
    embed.weight = nn.Parameter((embed.weight.double() @ basis).to(dtype))
    embed.embedding_dim = width
    stream = (trace.inputs[0].double() @ basis).to(dtype)
    layers = decoder_layers(model)
    for i, layer in enumerate(tqdm(list(layers), desc="SliceGPT layers", disable=not progress, leave=False)):
        attn, mlp = layer.self_attn, layer.mlp
        for linear in (attn.q_proj, attn.k_proj, attn.v_proj):
            read_through(linear, basis)
        set_norm(layer.input_layernorm, width, hidden)
        attn_out = attn(hidden_states=layer.input_layernorm(stream), **trace.kwargs[_attention_type(layer)])[0]
        mid = stream.double() @ basis.T + attn_out.double()  # the stream after attention, original coordinates
        mid_basis, k = pca_basis(mid, mask, width, damping)
        kept.append(k)
        write_into(attn.o_proj, mid_basis)
        attn_shortcut = basis.T @ mid_basis
        stream = (mid @ mid_basis).to(dtype)

        for linear in (mlp.gate_proj, mlp.up_proj):
            read_through(linear, mid_basis)
        set_norm(layer.post_attention_layernorm, width, hidden)
        out = stream.double() @ mid_basis.T + mlp(layer.post_attention_layernorm(stream)).double()
        basis, k = pca_basis(out, mask, width, damping)
        kept.append(k)
        write_into(mlp.down_proj, basis)
        sliced = SlicedDecoderLayer(layer, width)
        sliced.attn_shortcut.weight.copy_(attn_shortcut.T)
        sliced.mlp_shortcut.weight.copy_((mid_basis.T @ basis).T)
        layers[i] = sliced
        stream = (out @ basis).to(dtype)
    read_through(model.lm_head, basis)
    set_norm(model.model.norm, width, hidden)
    return kept


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          slicing: float | None = None, damping: float = 0.01, calibration_file: str | None = None,
          seed: int = 0, progress: bool = True, **unknown):
    """Give a target (ratio or layer-equivalent) or `slicing`, the fraction of the hidden width to remove."""
    reject_unknown("slicegpt", unknown)
    require_llama_like(loaded.arch, "slicegpt")
    model = loaded.model
    hidden = model.model.embed_tokens.embedding_dim
    if slicing is not None and (target_ratio is not None or target_layers is not None):
        raise LacoError("give either a target or a slicing fraction, not both")
    if slicing is not None and not 0 <= slicing < 1:
        raise LacoError(f"slicing must lie in [0, 1), got {slicing}")
    params_before = parameter_count(model)
    if slicing is None:
        budget, target = parameter_target(model, target_ratio, target_layers)
    else:
        target = {"slicing": slicing}
    batch = calibration_batch(loaded, sentences)
    tokens = int(batch["attention_mask"].sum())

    start = time.perf_counter()
    tied = untie_and_fold_norms(model)
    width = round((1 - slicing) * hidden) if slicing is not None else width_for_target(model, params_before - budget)
    granule = sliced_parameter_count(model, width) - sliced_parameter_count(model, width - 1) if width > 1 else None
    kept = rotate_and_slice(model, batch, width, damping, progress)
    seconds = time.perf_counter() - start

    return outcome(
        loaded, "slicegpt", sentences, calibration_file=calibration_file,
        config={"slicing": 1 - width / hidden, "damping": damping,
                "pca": "float64, damped by damping * mean(diag); signals taken sequentially from the sliced model"},
        target=target, params_before=params_before, seed=seed, seconds=seconds,
        hidden_size=hidden, sliced_width=width, untied_embeddings=tied, energy_kept=kept,
        calibration_tokens=tokens, calibration_warning=None if tokens > width else (
            f"{tokens} calibration tokens for bases of {width} directions: the PCA has rank at most {tokens}, "
            f"so the remaining kept directions are arbitrary (SliceGPT calibrates on many thousands of tokens)"),
        granule_parameters=granule,
        loader=LOADER, loadable=loadable_out_of_tree(loaded.arch, NOT_STOCK_REASON, VLLM_ARCHITECTURE),
    )


# ---- reloading ----------------------------------------------------------------------------------

def restructure(model: nn.Module, record: dict) -> None:
    """Give a freshly built model the sliced shapes and shortcut modules of the record."""
    width = record["sliced_width"]
    embed = model.model.embed_tokens
    model.model.embed_tokens = nn.Embedding(embed.num_embeddings, width, embed.padding_idx,
                                            dtype=embed.weight.dtype, device=embed.weight.device)
    layers = decoder_layers(model)
    for i, layer in enumerate(list(layers)):
        for name in BLOCK_INPUTS:
            linear = layer.get_submodule(name)
            set_linear(linear, linear.weight.new_zeros(linear.out_features, width))
        for name in BLOCK_OUTPUTS:
            linear = layer.get_submodule(name)
            bias = linear.bias.new_zeros(width) if linear.bias is not None else None
            set_linear(linear, linear.weight.new_zeros(width, linear.in_features), bias)
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            set_norm(norm, width, record["hidden_size"])
        layers[i] = SlicedDecoderLayer(layer, width)
    set_linear(model.lm_head, model.lm_head.weight.new_zeros(model.lm_head.out_features, width))
    set_norm(model.model.norm, width, record["hidden_size"])


def load(folder, *, dtype: str = "float32", device: str = "cpu"):
    """Reload a SliceGPT output: (model, tokenizer, record)."""
    return load_restructured(folder, dtype=dtype, device=device, restructure=restructure)
