"""Parameters and FLOPs of the throughput workload: the compute-bound ideal beside every speed-up.

Removing a third of the layers cannot make a compute-bound model three times faster, and
pruning of equal parameter counts can differ in compute: depth pruning removes whole layers,
width pruning narrows them, and neither shrinks the embeddings or lm_head. So every model's
FLOPs are counted for the workload the throughput measurement runs (a batch of `batch_size`
prompts of `input_len` tokens, `output_len` new tokens each), and the ideal speed-up of a
pruned model is dense FLOPs / pruned FLOPs (`ideal_speedup`).

How it is counted: torch's own `torch.utils.flop_counter.FlopCounterMode` over real forward
passes of a copy of the model on the meta device (shapes only: nothing is computed and no
weights are copied, so a 7B model counts as fast as a small one).
- prefill: one forward of the whole prompt batch, logits of the last position only (what
  `generate` and vLLM compute; `logits_to_keep=1`);
- decode: one forward of one token per sequence over the KV cache of the tokens before it. The
  first new token comes from the prefill, so there are `output_len - 1` decode steps, at key
  lengths input_len + 1 .. input_len + output_len - 1. The FLOPs of a step are affine in the key
  length (the linear layers fixed, attention proportional to the keys), so the first and the last
  step are counted and their mean is the mean over all steps.

What FlopCounterMode counts: 2*m*n*k for every matrix product (aten.mm, addmm, bmm, baddbmm:
the linear layers, attention's score and value products) and torch's formula for the fused
attention kernels (`sdpa_flop_count`: both products over the full key length; causal masking is
not discounted). What it does not count: elementwise work (norms, activations, softmax, residual
additions, rotary embeddings: on Llama "other" is 0), embedding lookups, sampling. The same holds
for the dense and the pruned model, and it is small beside the products.
"""

from __future__ import annotations

import copy
import inspect
import re
import time

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from bench.subject import Outcome, model_device
from laco.surgery import decoder_layers

COUNTER = "torch.utils.flop_counter.FlopCounterMode on the meta device"
LINEAR_OPS = {"aten.mm", "aten.addmm"}  # every other counted op inside a decoder layer is attention's

# torch's fused-attention formula for the CPU kernel, which its registry leaves out (the meta
# device decomposes attention into bmm, so this only matters for counts on real CPU tensors)
CUSTOM_FORMULAS = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    CUSTOM_FORMULAS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = (
        lambda q, k, v, *args, out_shape=None, **kwargs: sdpa_flop_count(q, k, v))


def settings(ctx) -> dict:
    """The throughput workload, whose FLOPs are counted (read from the profile's throughput table)."""
    t = ctx.profile.throughput
    return {"counter": COUNTER, "torch": torch.__version__, "batch_size": t.batch_size, "input_len": t.input_len,
            "output_len": t.output_len, "dtype": ctx.profile.model.dtype, "device": model_device(ctx.dense_load_args())}


def measure(subject, settings: dict, ctx) -> Outcome:
    model, _ = subject.model_and_tokenizer()
    return Outcome("ok", None, count_flops(model, settings["batch_size"], settings["input_len"], settings["output_len"]))


def count_flops(model, batch_size: int, input_len: int, output_len: int) -> dict:
    """Parameters and FLOPs of `model` for the workload; see the module docstring for the protocol.

    Returns parameters {total, embedding, lm_head, lm_head_tied, non_embedding, decoder_layers,
    layers}; prefill {flops (the batch), flops_per_token (per prompt token), by_module};
    decode {steps, first and last {key_length, flops_per_token, by_module}, flops_per_token_mean};
    workload_flops (prefill + every decode step of the batch). by_module splits the FLOPs into
    decoder_layers (with its linear and attention parts), lm_head and other."""
    if min(batch_size, input_len, output_len) < 1:
        raise ValueError("batch_size, input_len and output_len must be at least 1")
    start = time.perf_counter()
    meta = meta_copy(model)
    prefill = _forward_flops(meta, batch_size, input_len, context=0)
    steps = output_len - 1
    decode = None
    if steps:
        first_keys, last_keys = input_len + 1, input_len + steps
        first = _forward_flops(meta, batch_size, 1, context=first_keys - 1)
        last = first if last_keys == first_keys else _forward_flops(meta, batch_size, 1, context=last_keys - 1)
        per_token = lambda counts, keys: {"key_length": keys, "flops_per_token": counts["total"] / batch_size,  # noqa: E731
                                          "by_module": _scaled(counts, 1 / batch_size)}
        decode = {"steps": steps, "first": per_token(first, first_keys), "last": per_token(last, last_keys),
                  "flops_per_token_mean": (first["total"] + last["total"]) / 2 / batch_size}
    workload = prefill["total"] + (steps * batch_size * decode["flops_per_token_mean"] if decode else 0)
    return {
        "counter": COUNTER,
        "workload": {"batch_size": batch_size, "input_len": input_len, "output_len": output_len,
                     "prefill_logits": "last position" if _accepts(model, "logits_to_keep") else "every position"},
        "parameters": parameter_counts(model),
        "prefill": {"flops": prefill["total"], "flops_per_token": prefill["total"] / (batch_size * input_len),
                    "by_module": _scaled(prefill, 1)},
        "decode": decode,
        "workload_flops": workload,
        "not_counted": "elementwise work (norms, activations, softmax, residual adds), embedding lookups, sampling; "
                       "attention counted over the full key length (causal masking not discounted)",
        "seconds": time.perf_counter() - start,
    }


def ideal_speedup(dense: dict, pruned: dict) -> dict:
    """Dense FLOPs / pruned FLOPs of two `count_flops` results of the same workload: the speed-up
    a compute-bound run could show at most, per phase and for the whole workload."""
    if dense["workload"] != pruned["workload"]:
        raise ValueError(f"FLOPs of different workloads: {dense['workload']} vs {pruned['workload']}")
    out = {"prefill": dense["prefill"]["flops"] / pruned["prefill"]["flops"],
           "workload": dense["workload_flops"] / pruned["workload_flops"], "decode": None}
    if dense["decode"]:
        out["decode"] = dense["decode"]["flops_per_token_mean"] / pruned["decode"]["flops_per_token_mean"]
    return out


def parameter_counts(model) -> dict:
    """Parameters, tied tensors once. The embeddings and lm_head do not shrink under layer pruning."""
    total = sum(p.numel() for p in model.parameters())
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    head_weight = head.weight if head is not None else None
    tied = head_weight is not None and head_weight is embedding
    lm_head = 0 if tied or head_weight is None else sum(p.numel() for p in head.parameters())
    layers = decoder_layers(model)
    return {"total": total, "embedding": embedding.numel(), "lm_head": lm_head, "lm_head_tied": tied,
            "non_embedding": total - embedding.numel() - lm_head,
            "decoder_layers": sum(p.numel() for p in layers.parameters()), "layers": len(layers)}


def meta_copy(model):
    """The model's modules with every parameter and buffer on the meta device (tied ones stay
    tied): deepcopy with the tensors pre-filled in its memo, so no weight is copied."""
    memo = {}
    for t in (*model.parameters(), *model.buffers()):
        empty = torch.empty_like(t, device="meta")
        memo[id(t)] = torch.nn.Parameter(empty, requires_grad=False) if isinstance(t, torch.nn.Parameter) else empty
    meta = copy.deepcopy(model, memo)
    if getattr(model, "hf_device_map", None):  # accelerate's hooks would move the inputs to the GPUs
        from accelerate.hooks import remove_hook_from_module

        remove_hook_from_module(meta, recurse=True)
    return meta.eval()


@torch.no_grad()
def _forward_flops(meta, batch_size: int, new_tokens: int, context: int) -> dict:
    """FLOPs of one forward of `new_tokens` per sequence after `context` cached tokens (an
    uncounted forward fills the cache). No attention mask is passed: every prompt has the same
    length, and a mask built from a meta tensor cannot be inspected."""
    from transformers import DynamicCache

    cache_kw = "cache" if _accepts(meta, "cache") else "past_key_values"
    cache = DynamicCache()
    ids = lambda n: torch.zeros(batch_size, n, dtype=torch.long, device="meta")  # noqa: E731
    kwargs = {cache_kw: cache, "use_cache": True}
    if _accepts(meta, "logits_to_keep"):
        kwargs["logits_to_keep"] = 1
    if context:
        meta(input_ids=ids(context), **kwargs)
    counter = FlopCounterMode(display=False, custom_mapping=CUSTOM_FORMULAS)
    with counter:
        meta(input_ids=ids(new_tokens), **kwargs)
    return _by_module(meta, counter)


def _by_module(model, counter: FlopCounterMode) -> dict:
    """Total FLOPs, split into the decoder layers (linear and attention ops), lm_head and the rest."""
    counts = counter.get_flop_counts()
    root = type(model).__name__
    layers = set(decoder_layers(model))
    layer_names = {f"{root}.{name}" for name, module in model.named_modules() if module in layers}
    head_name = next((f"{root}.{name}" for name, module in model.named_modules()
                      if module is model.get_output_embeddings()), None)
    op = lambda o: re.sub(r"\.(default|Tensor|out)$", "", str(o))  # noqa: E731
    linear = attention = 0
    for name in layer_names:
        for o, n in counts.get(name, {}).items():
            if op(o) in LINEAR_OPS:
                linear += n
            else:
                attention += n
    total = counter.get_total_flops()
    head = sum(counts.get(head_name, {}).values()) if head_name else 0
    return {"total": total, "decoder_layers": linear + attention, "decoder_linear": linear,
            "decoder_attention": attention, "lm_head": head, "other": total - linear - attention - head}


def _scaled(counts: dict, factor: float) -> dict:
    return {"decoder_layers": {"total": counts["decoder_layers"] * factor, "linear": counts["decoder_linear"] * factor,
                               "attention": counts["decoder_attention"] * factor},
            "lm_head": counts["lm_head"] * factor, "other": counts["other"] * factor}


def _accepts(model, name: str) -> bool:
    return name in inspect.signature(model.forward).parameters
