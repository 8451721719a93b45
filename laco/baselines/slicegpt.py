"""SliceGPT (Ashkboos et al., ICLR 2024, "SliceGPT: Compress Large Language Models by Deleting Rows
and Columns"): rotate the residual stream by PCA, then slice its width.

1. Norm folding: the scale of every RMSNorm moves into the columns of the linear layers it
   feeds (q/k/v, gate/up, lm_head), leaving scale-free norms, which commute with rotations
   (each layer's when the rotation reaches it, so a streamed model folds one layer at a time).
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
basis it must fill, and the remaining directions are arbitrary. The method therefore declares
`min_calibration_tokens` = d' and refuses a smaller set, saying how many tokens are missing. The
project's default ten sentences (about 200 tokens on SmolLM2) are far below it; SliceGPT's paper
calibrates on WikiText-2 training sequences of 2048 tokens. Offline, wikitext-2 test documents
that the run does not evaluate serve (`laco.calibration.wikitext_calibration`).

Which models: pre-norm layers (`input_layernorm` before attention, `post_attention_layernorm`
before the MLP, nothing else on the residual stream) whose norms multiply by their weight; the
projections that read the stream (q/k/v, gate/up, packed or not: Phi-3's qkv_proj and
gate_up_proj, Baichuan's W_pack) and write it (o, down) are found by their roles
(`laco.architectures.ROLES`). That covers Llama, Mistral, Qwen2/3, Phi-3, Granite (its residual
multiplier scales each block's output, as in its own layer) and Baichuan; Gemma 2/3 and OLMo 2
normalise block outputs before the residual sum, which a rotation of the stream cannot pass
through, and are refused (`require_sliceable`).

The blocks work in a width d' < config.hidden_size and carry shortcut matrices the stock
architectures do not have, so stock transformers cannot load the output: `load` rebuilds the
structure from the record, and vLLM serves Llama-family outputs through the out-of-tree
architecture of bench/vllm_models.py.
"""

from __future__ import annotations

import copy
import math
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from laco import LacoError
from laco.architectures import ROLES, Architecture
from laco.baselines.common import calibration_batch, load_restructured, loadable_out_of_tree, reject_unknown
from laco.calibration import require_tokens
from laco.memory import LAYER_CACHE
from laco.record import pruned
from laco.surgery import decoder_layers, final_norm, layer_arguments, parameter_count
from laco.targets import parameter_target

LOADER = "laco.baselines.slicegpt:load"
NOT_STOCK_REASON = ("blocks run in a sliced width d' < config.hidden_size and every residual connection carries a "
                    "d' x d' shortcut rotation, which the stock Llama/Qwen architectures lack")
# the out-of-tree vLLM model of bench/vllm_models.py: Llama in the sliced width, with the shortcuts
VLLM_ARCHITECTURE = "LacoSliceGPTForCausalLM"
PRE_NORMS = ("input_layernorm", "post_attention_layernorm")  # before attention, before the MLP
READS, WRITES = {"q", "k", "v", "gate", "up"}, {"o", "down"}


def stream_projections(layer: nn.Module) -> dict[str, list[str]]:
    """Linear modules of a layer that read the residual stream ("attention", "mlp": by block) and
    write into it ("writes"), by role; unknown names are left out (`require_sliceable` refuses them)."""
    out: dict[str, list[str]] = {"attention": [], "mlp": [], "writes": []}
    for name, module in layer.named_modules():
        roles = set(ROLES.get(name.rsplit(".", 1)[-1], ()))
        if not isinstance(module, nn.Linear) or not roles:
            continue
        if roles <= WRITES:
            out["writes"].append(name)
        elif roles <= READS:
            out["attention" if name.startswith("self_attn.") else "mlp"].append(name)
    return out


def block_inputs(layer: nn.Module) -> list[str]:
    io = stream_projections(layer)
    return io["attention"] + io["mlp"]


def require_sliceable(arch: Architecture, model: nn.Module, layer: nn.Module | None = None) -> None:
    """Refuse, in one line, a model whose layers SlicedDecoderLayer cannot compute (`layer`: the first
    one with its weights, when the model's are not in memory)."""
    def refuse(why: str):
        raise LacoError(f"slicegpt cannot slice {arch.model_type}: {why}")

    if arch.needs_remote_code:
        refuse(f"its output reloads through {LOADER}, which builds stock transformers classes and runs no remote code")
    layer_norms = tuple(n for n in arch.norms if "." not in n)
    if sorted(layer_norms) != sorted(PRE_NORMS):
        refuse(f"it needs pre-norm layers with exactly {' and '.join(PRE_NORMS)} on the residual stream; "
               f"the layers have {', '.join(layer_norms)}")
    if not all(p.startswith("self_attn.") for p in arch.attention) or not all(p.startswith("mlp.") for p in arch.mlp):
        refuse("it needs the attention block under self_attn and the MLP under mlp")
    layer = layer if layer is not None else decoder_layers(model)[0]
    io = stream_projections(layer)
    unknown = [p for p in arch.merged if not set(ROLES.get(p.rsplit(".", 1)[-1], ())) & (READS | WRITES)]
    if unknown:
        refuse(f"projections of no known role: {', '.join(unknown)}")
    if io["writes"] != ["self_attn.o_proj", "mlp.down_proj"] or not io["attention"] or not io["mlp"]:
        refuse(f"it needs one output projection per block (self_attn.o_proj, mlp.down_proj); found {io['writes']}")
    for name, norm in [(n, layer.get_submodule(n)) for n in PRE_NORMS] + [("final norm", final_norm(model))]:
        if not scales_by_weight(norm):
            refuse(f"its {name} does not multiply by its weight, so the scale cannot be folded into the next linear")
    if not isinstance(model.get_input_embeddings(), nn.Embedding) or not isinstance(model.get_output_embeddings(), nn.Linear):
        refuse("it needs an nn.Embedding input and an nn.Linear head")


@torch.no_grad()
def scales_by_weight(norm: nn.Module) -> bool:
    """norm(x) == unit_norm(x) * weight, checked on a random input (Gemma's norms scale by 1 + weight)."""
    weight = getattr(norm, "weight", None)
    if weight is None or weight.dim() != 1 or any(p is not weight for p in norm.parameters(recurse=False)):
        return False
    x = torch.randn(3, weight.numel(), generator=torch.Generator().manual_seed(0)).to(weight)
    unit = copy.deepcopy(norm)
    unit.weight.fill_(1.0)
    return torch.allclose(norm(x), unit(x) * weight, rtol=1e-4, atol=1e-5)


class SlicedDecoderLayer(nn.Module):
    """A pre-norm decoder layer whose residual stream changes basis at each block:
    h = h S_attn + attn(norm(h)); h = h S_mlp + mlp(norm(h)). `S` is stored as a bias-free
    linear layer (weight = S^T)."""

    def __init__(self, layer: nn.Module, width: int):
        super().__init__()
        self.self_attn, self.mlp = layer.self_attn, layer.mlp
        self.input_layernorm, self.post_attention_layernorm = layer.input_layernorm, layer.post_attention_layernorm
        self.residual_multiplier = residual_multiplier(layer)
        weight = layer.input_layernorm.weight
        self.attn_shortcut = nn.Linear(width, width, bias=False, device=weight.device, dtype=weight.dtype)
        self.mlp_shortcut = nn.Linear(width, width, bias=False, device=weight.device, dtype=weight.dtype)
        if hasattr(layer, "attention_type"):
            self.attention_type = layer.attention_type

    def forward(self, hidden_states, **kwargs):
        # masks, rotary embeddings and the KV cache pass through under whatever names the model uses
        attn_out, _ = self.self_attn(hidden_states=self.input_layernorm(hidden_states), **kwargs)
        m = self.residual_multiplier
        hidden_states = self.attn_shortcut(hidden_states) + attn_out * m
        return self.mlp_shortcut(hidden_states) + self.mlp(self.post_attention_layernorm(hidden_states)) * m


def residual_multiplier(layer: nn.Module) -> float:
    """The factor a layer applies to each block's output before the residual sum (Granite's; else 1)."""
    return float(getattr(layer, "residual_multiplier", 1.0))


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
def untie_head(model: nn.Module) -> bool:
    """Untie the output embedding if tied: the input side is rotated by the first basis, the output side
    by the last. Returns whether the embeddings were tied."""
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head.weight is embed.weight or bool(getattr(model.config, "tie_word_embeddings", False))
    if tied:
        head.weight = nn.Parameter(embed.weight.detach().clone())
        model.config.tie_word_embeddings = False
    return tied


@torch.no_grad()
def fold_norm(norm: nn.Module, linears: list[nn.Linear]) -> None:
    """Move the norm's scale into the columns of the linears it feeds; the norm is left scale-free."""
    for linear in linears:
        linear.weight.mul_(norm.weight.to(linear.weight.dtype))
    norm.weight.fill_(1.0)


def fold_layer_norms(layer: nn.Module) -> None:
    io = stream_projections(layer)
    fold_norm(layer.input_layernorm, [layer.get_submodule(n) for n in io["attention"]])
    fold_norm(layer.post_attention_layernorm, [layer.get_submodule(n) for n in io["mlp"]])


def untie_and_fold_norms(model: nn.Module) -> bool:
    """Untie the head, then fold every RMSNorm scale into the linears it feeds (`rotate_and_slice` folds
    each layer as it reaches it, the same weights). Returns whether the embeddings were tied."""
    tied = untie_head(model)
    for layer in decoder_layers(model):
        fold_layer_norms(layer)
    fold_norm(final_norm(model), [model.get_output_embeddings()])
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
    embed, head = model.get_input_embeddings(), model.get_output_embeddings()
    count = embed.num_embeddings * width + head.out_features * width + width  # embeddings, head, final norm
    count += head.bias.numel() if head.bias is not None else 0
    for layer in decoder_layers(model):
        touched = 0
        for name in block_inputs(layer):
            linear = layer.get_submodule(name)
            bias = linear.bias.numel() if linear.bias is not None else 0
            count += linear.out_features * width + bias
            touched += parameter_count(linear)
        for name in stream_projections(layer)["writes"]:
            linear = layer.get_submodule(name)
            count += width * linear.in_features + (width if linear.bias is not None else 0)
            touched += parameter_count(linear)
        touched += parameter_count(layer.input_layernorm) + parameter_count(layer.post_attention_layernorm)
        count += 2 * width + 2 * width * width + parameter_count(layer) - touched  # norms, shortcuts, the rest
    return count


def width_for_target(model: nn.Module, target_after: int) -> int:
    """The width whose parameter count comes closest to `target_after`. The count is quadratic in
    the width (the shortcuts), so three evaluations give it for every width."""
    hidden = model.get_input_embeddings().embedding_dim
    c0, c1, c2 = (sliced_parameter_count(model, w) for w in (0, 1, 2))
    quad = (c2 - 2 * c1 + c0) // 2
    count = lambda w: c0 + (c1 - c0 - quad) * w + quad * w * w  # noqa: E731
    return min(range(1, hidden + 1), key=lambda w: abs(count(w) - target_after))


# ---- the pruner ---------------------------------------------------------------------------------

@torch.no_grad()
def rotate_and_slice(model: nn.Module, batch: dict, width: int, damping: float, progress: bool = False,
                     via=None) -> list[float]:
    """Steps 1-4 on a model with an untied head, each layer folded as it is reached; returns the energy
    fraction each basis keeps. `via` (a `LoadedModel`) gives each layer's weights and takes the sliced
    layer (a streamed model keeps them on disk)."""
    hidden = model.get_input_embeddings().embedding_dim
    mask = batch["attention_mask"]
    first_input, layer_kwargs = layer_arguments(model, batch)
    dtype = first_input.dtype
    kept: list[float] = []

    basis, k = pca_basis(first_input, mask, width, damping)
    kept.append(k)
    embed = model.get_input_embeddings()
    embed.weight = nn.Parameter((embed.weight.double() @ basis).to(dtype))
    embed.embedding_dim = width
    stream = (first_input.double() @ basis).to(dtype)
    layers = decoder_layers(model)
    for i, layer in enumerate(tqdm(list(layers), desc="SliceGPT layers", disable=not progress, leave=False)):
        layer = via.materialise(layer) if via is not None else layer
        fold_layer_norms(layer)
        attn, mlp, io, m = layer.self_attn, layer.mlp, stream_projections(layer), residual_multiplier(layer)
        for name in io["attention"]:
            read_through(layer.get_submodule(name), basis)
        set_norm(layer.input_layernorm, width, hidden)
        attn_out = attn(hidden_states=layer.input_layernorm(stream), **layer_kwargs[i])[0]
        mid = stream.double() @ basis.T + m * attn_out.double()  # the stream after attention, original coordinates
        mid_basis, k = pca_basis(mid, mask, width, damping)
        kept.append(k)
        write_into(attn.o_proj, mid_basis)
        attn_shortcut = basis.T @ mid_basis
        stream = (mid @ mid_basis).to(dtype)

        for name in io["mlp"]:
            read_through(layer.get_submodule(name), mid_basis)
        set_norm(layer.post_attention_layernorm, width, hidden)
        out = stream.double() @ mid_basis.T + m * mlp(layer.post_attention_layernorm(stream)).double()
        basis, k = pca_basis(out, mask, width, damping)
        kept.append(k)
        write_into(mlp.down_proj, basis)
        sliced = SlicedDecoderLayer(layer, width)
        sliced.attn_shortcut.weight.copy_(attn_shortcut.T)
        sliced.mlp_shortcut.weight.copy_((mid_basis.T @ basis).T)
        layers[i] = via.adopt(sliced, i, replaces=(layers[i],)) if via is not None else sliced
        stream = (out @ basis).to(dtype)
    fold_norm(final_norm(model), [model.get_output_embeddings()])
    read_through(model.get_output_embeddings(), basis)
    set_norm(final_norm(model), width, hidden)
    return kept


def kept_width(model: nn.Module, target_ratio: float | None, target_layers: int | None,
               slicing: float | None) -> tuple[int, dict]:
    """d', the width every basis keeps, and the target as recorded. Shapes alone decide it, so it is
    the same before and after the norms are folded and the head untied."""
    hidden = model.get_input_embeddings().embedding_dim
    if slicing is not None and (target_ratio is not None or target_layers is not None):
        raise LacoError("give either a target or a slicing fraction, not both")
    if slicing is not None:
        if not 0 <= slicing < 1:
            raise LacoError(f"slicing must lie in [0, 1), got {slicing}")
        return round((1 - slicing) * hidden), {"slicing": slicing}
    budget, target = parameter_target(model, target_ratio, target_layers)
    return width_for_target(model, parameter_count(model) - budget), target


def min_calibration_tokens(loaded, *, target_ratio: float | None = None, target_layers: int | None = None,
                           slicing: float | None = None, **_) -> int:
    """d': each basis is the leading d' eigenvectors of a second-moment matrix summed over the calibration
    tokens, whose rank is at most the token count; below d' tokens some kept directions are arbitrary."""
    return kept_width(loaded.model, target_ratio, target_layers, slicing)[0]


def peak_memory(shape, *, streamed: bool, **_) -> dict[str, int]:
    """Float64 work in steps that do not overlap: the embeddings (later the head) times a basis beside two
    float64 streams; per layer a block's forward beside one, the three summed after it, or a weight rotated
    in float64 beside one; d x d second moments and bases throughout."""
    d, stream = shape.hidden, shape.tokens * shape.hidden * 8  # one float64 copy of the calibration stream
    layer_step = 4 * d * d * 8 + max(shape.layer_activation_bytes() + stream, 3 * stream,
                                     2 * shape.largest_tensor_params * 8 + stream)
    parts = {"calibration states": shape.hidden_state_bytes,
             "untied head": shape.embedding_params * shape.dtype_bytes if shape.head_params == 0 else 0,
             "largest step (float64)": max(2 * shape.embedding_params * 8 + 2 * stream, layer_step)}
    if streamed:
        return {**parts, "weights outside the layers": shape.non_layer_bytes, "layers in memory": shape.layer_bytes,
                LAYER_CACHE: 0}  # each layer is sliced once after the first pass
    return {**parts, "weights": shape.weight_bytes}


def prune_work(shape, *, target_ratio: float | None = None, target_layers: int | None = None,
               slicing: float | None = None, **_):
    """`rotate_and_slice` counted (d wide, d' kept, t calibration tokens, P a layer's weights): one pass of
    the layers; in float64, per layer two d x d second moments and eigendecompositions, each weight rotated
    (2 d' P), four t d d' products, two d' d d' shortcuts; the first basis; embeddings and head (2 V d d')."""
    from laco.work import EIGH_FLOPS_PER_CUBE, Work, layers_removed

    d, t, n = shape.hidden, shape.tokens, shape.n_layers
    kept = 1 - slicing if slicing is not None else (n - layers_removed(shape, target_ratio, target_layers)) / n
    w = max(1, round(d * kept))  # about the width that removes the target's parameters
    basis = 2 * t * d * d + EIGH_FLOPS_PER_CUBE * d**3
    per_layer = 2 * w * shape.layer_params + 4 * 2 * t * d * w + 2 * basis + 2 * 2 * w * w * d
    return Work(float(n), float64_flops=n * per_layer + basis + 2 * 2 * shape.vocab * d * w)


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          slicing: float | None = None, damping: float = 0.01, calibration_file: str | dict | None = None,
          seed: int = 0, progress: bool = True, **unknown):
    """Give a target (ratio or layer-equivalent) or `slicing`, the fraction of the hidden width to remove."""
    reject_unknown("slicegpt", unknown)
    model = loaded.model
    require_sliceable(loaded.arch, model, loaded.materialise(decoder_layers(model)[0]))
    hidden = model.get_input_embeddings().embedding_dim
    params_before = parameter_count(model)
    width, target = kept_width(model, target_ratio, target_layers, slicing)
    batch = calibration_batch(loaded, sentences)
    tokens = require_tokens("slicegpt", batch, width, f"at least the {width} hidden directions it keeps")

    start = time.perf_counter()
    tied = untie_head(model)
    granule = sliced_parameter_count(model, width) - sliced_parameter_count(model, width - 1) if width > 1 else None
    kept = rotate_and_slice(model, batch, width, damping, progress, via=loaded)
    seconds = time.perf_counter() - start

    return pruned(
        loaded, "slicegpt", sentences, calibration=calibration_file,
        config={"slicing": 1 - width / hidden, "damping": damping,
                "pca": "float64, damped by damping * mean(diag); signals taken sequentially from the sliced model"},
        target=target, params_before=params_before, seed=seed, prune_seconds=seconds,
        hidden_size=hidden, sliced_width=width, untied_embeddings=tied, energy_kept=kept,
        calibration_tokens=tokens, min_calibration_tokens=width, granule_parameters=granule,
        residual_multiplier=residual_multiplier(decoder_layers(model)[0]),
        loader=LOADER, loadable=loadable_out_of_tree(loaded.arch, NOT_STOCK_REASON, VLLM_ARCHITECTURE),
    )


# ---- reloading ----------------------------------------------------------------------------------

def restructure(model: nn.Module, record: dict) -> None:
    """Give a freshly built model the sliced shapes and shortcut modules of the record."""
    width = record["sliced_width"]
    embed = model.get_input_embeddings()
    model.set_input_embeddings(nn.Embedding(embed.num_embeddings, width, embed.padding_idx,
                                            dtype=embed.weight.dtype, device=embed.weight.device))
    layers = decoder_layers(model)
    for i, layer in enumerate(list(layers)):
        for name in block_inputs(layer):
            linear = layer.get_submodule(name)
            set_linear(linear, linear.weight.new_zeros(linear.out_features, width))
        for name in stream_projections(layer)["writes"]:
            linear = layer.get_submodule(name)
            bias = linear.bias.new_zeros(width) if linear.bias is not None else None
            set_linear(linear, linear.weight.new_zeros(width, linear.in_features), bias)
        for norm in (layer.input_layernorm, layer.post_attention_layernorm):
            set_norm(norm, width, record["hidden_size"])
        layers[i] = SlicedDecoderLayer(layer, width)
    head = model.get_output_embeddings()
    set_linear(head, head.weight.new_zeros(head.out_features, width))
    set_norm(final_norm(model), width, record["hidden_size"])


def load(folder, *, dtype: str = "float32", device: str = "cpu"):
    """Reload a SliceGPT output: (model, tokenizer, record)."""
    return load_restructured(folder, dtype=dtype, device=device, restructure=restructure)


def vllm_overrides(record: dict, folder) -> dict:
    """What vLLM must be told beyond the saved config to serve this output (laco.pruners.vllm_overrides_for):
    the out-of-tree architecture, a residual stream d' wide, and the heads at their own size."""
    import json
    from pathlib import Path

    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
    return {"architectures": [VLLM_ARCHITECTURE], "hidden_size": record["sliced_width"], "head_dim": head_dim}
