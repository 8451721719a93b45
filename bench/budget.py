"""What each measurement setting asks of memory, from the model's config alone, before anything loads.

One function per measurement returns its estimates, each an `Estimate(key, bytes, formula)`: the
profile key that decides it, the bytes at its peak, and how they add up. `check_budget` refuses a
profile whose estimate exceeds the machine (one line: the key, the estimate, the limit); the plan of
a run prints the same estimates. The peaks counted, per forward of `batch` sequences of `tokens`:

- the weights: parameters × the bytes of the load dtype;
- the logits and their log-softmax: 2 × batch × tokens × vocab × 4 bytes (float32, as the loss and
  lm-eval compute them);
- one layer's attention scores: batch × heads × tokens² × the dtype's bytes (the eager kernel; the
  fused ones need less);
- the KV cache of a generation: 2 × layers × batch × tokens × kv heads × head dim × the dtype's bytes.

The limit is the machine's physical memory (psutil), or the GPU's for a CUDA device: a setting above
it cannot run. lm-eval's word perplexity reads windows of `perplexity.lm_eval_max_length` tokens,
which defaults to the perplexity window (`bench.perplexity`), not to the model's whole context.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from laco import LacoError

GiB = 1 << 30
LOGIT_BYTES = 4
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
DEFAULT_CONTEXT = 2048  # lm-eval's, for a config that states none


class Estimate(NamedTuple):
    key: str
    bytes: int
    formula: str


@dataclass(frozen=True)
class Shape:
    """The sizes of a model that its memory depends on."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    context: int
    tied: bool

    @property
    def parameters(self) -> int:
        attention = self.hidden * self.head_dim * (2 * self.heads + 2 * self.kv_heads)
        per_layer = attention + 3 * self.hidden * self.intermediate
        return self.vocab * self.hidden * (1 if self.tied else 2) + self.layers * per_layer


def shape_of(config: dict) -> Shape:
    """The sizes from a transformers config.json (a composite config's text part)."""
    c = {**config, **(config.get("text_config") or {})}
    heads = c["num_attention_heads"]
    context = next((c[k] for k in ("n_positions", "max_position_embeddings", "n_ctx", "model_max_length") if c.get(k)),
                   DEFAULT_CONTEXT)
    return Shape(vocab=c["vocab_size"], hidden=c["hidden_size"], layers=c["num_hidden_layers"], heads=heads,
                 kv_heads=c.get("num_key_value_heads") or heads, head_dim=c.get("head_dim") or c["hidden_size"] // heads,
                 intermediate=c.get("intermediate_size") or 4 * c["hidden_size"], context=int(context),
                 tied=bool(c.get("tie_word_embeddings", False)))


def model_config(spec: str, revision: str | None = None) -> dict:
    """The config of a model spec without its weights: the folder's config.json, a GGUF's converted
    copy or its metadata, the hub cache's snapshot."""
    from laco.cache import cache_root
    from laco.loading import resolve

    source = resolve(spec, revision)
    if source.kind == "folder":
        return json.loads((Path(source.path) / "config.json").read_text(encoding="utf-8"))
    if source.kind in ("embedded", "gguf"):
        cached = cache_root() / "gguf" / source.sha256[:16] / "config.json"
        if cached.is_file():
            return json.loads(cached.read_text(encoding="utf-8"))
        from transformers import AutoConfig

        path = Path(source.path)
        return AutoConfig.from_pretrained(path.parent, gguf_file=path.name).to_dict()
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(spec, "config.json", revision=source.revision or revision)
    if isinstance(cached, str):
        return json.loads(Path(cached).read_text(encoding="utf-8"))
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(spec, revision=source.revision or revision).to_dict()


def forward(key: str, what: str, shape: Shape, batch: int, tokens: int, nbytes: int, weights: int) -> Estimate:
    """The peak of one forward of `batch` × `tokens` with its log-softmax, on top of the weights."""
    logits = 2 * batch * tokens * shape.vocab * LOGIT_BYTES
    attention = batch * shape.heads * tokens * tokens * nbytes
    formula = (f"{what}: logits 2 × {batch} × {tokens} × {shape.vocab} × {LOGIT_BYTES} B = {gib(logits)}, attention "
               f"{batch} × {shape.heads} × {tokens}² × {nbytes} B = {gib(attention)}, weights {gib(weights)}")
    return Estimate(key, weights + logits + attention, formula)


def generation(key: str, what: str, shape: Shape, batch: int, prompt: int, new: int, nbytes: int,
               weights: int) -> Estimate:
    """A forward of the prompt, then a generation whose KV cache grows to prompt + new tokens."""
    prefill = forward(key, what, shape, batch, prompt, nbytes, weights)
    cache = 2 * shape.layers * batch * (prompt + new) * shape.kv_heads * shape.head_dim * nbytes
    return Estimate(key, prefill.bytes + cache, f"{prefill.formula}, KV cache {gib(cache)}")


def perplexity(profile, shape: Shape, nbytes: int) -> list[Estimate]:
    p, weights = profile.perplexity, shape.parameters * nbytes
    out = [forward("perplexity.window", f"{p.batch_size} windows of {p.window} tokens", shape, p.batch_size, p.window,
                   nbytes, weights)]
    if p.lm_eval_wikitext:
        length = p.lm_eval_max_length or p.window
        batch = profile.accuracy.batch_size
        out.append(forward("perplexity.lm_eval_max_length", f"lm-eval word perplexity, {batch} × {length} tokens",
                           shape, batch, length, nbytes, weights))
    return out


def accuracy(profile, shape: Shape, nbytes: int) -> list[Estimate]:
    """lm-eval pads a batch to its longest request, at most max_length (default: the model's context)."""
    a = profile.accuracy
    if a.backend == "vllm" or not a.tasks:  # vLLM sizes its own cache (gpu_memory_utilization)
        return []
    length = a.max_length or shape.context
    return [forward("accuracy.max_length", f"lm-eval, {a.batch_size} requests of up to {length} tokens", shape,
                    a.batch_size, length, nbytes, shape.parameters * nbytes)]


def memory(profile, shape: Shape, nbytes: int) -> list[Estimate]:
    m = profile.memory
    return [generation("memory.prompt_len", f"{m.batch_size} × ({m.prompt_len} + {m.new_tokens}) tokens", shape,
                       m.batch_size, m.prompt_len, m.new_tokens, nbytes, shape.parameters * nbytes)]


def throughput(profile, shape: Shape, nbytes: int) -> list[Estimate]:
    t = profile.throughput
    return [generation("throughput.input_len", f"{t.batch_size} × ({t.input_len} + {t.output_len}) tokens", shape,
                       t.batch_size, t.input_len, t.output_len, nbytes, shape.parameters * nbytes)]


ESTIMATES: dict[str, Callable] = {"perplexity": perplexity, "accuracy": accuracy, "memory": memory,
                                  "throughput_hf": throughput}


def estimates(profile, shape: Shape) -> list[Estimate]:
    """Every estimate of the profile's measurements, for its dense model (the largest of the run)."""
    nbytes = DTYPE_BYTES.get(profile.model.dtype, 4)
    return [e for name in profile.measurements if name in ESTIMATES for e in ESTIMATES[name](profile, shape, nbytes)]


def memory_limit(device: str, device_map) -> tuple[int, str] | None:
    """(bytes, what) the model's device has; None when it cannot be told here."""
    if device.startswith("cuda") or device_map:
        import torch

        if not torch.cuda.is_available():
            return None
        indices = range(torch.cuda.device_count()) if device_map else [torch.device(device).index or 0]
        return sum(torch.cuda.get_device_properties(i).total_memory for i in indices), "the GPU memory"
    import psutil

    return psutil.virtual_memory().total, "this machine's memory"


def check_budget(profile) -> list[Estimate]:
    """Refuse (LacoError) the first setting that needs more memory than the device has; the estimates."""
    m = profile.model
    try:
        shape = shape_of(model_config(m.spec, m.revision))
    except (KeyError, TypeError, ValueError, OSError):  # a config we cannot size: the load says what is wrong
        return []
    found = estimates(profile, shape)
    limit = memory_limit(m.device, m.device_map)
    for e in found:
        if limit and e.bytes > limit[0]:
            raise LacoError(f"{e.key} needs about {gib(e.bytes)} of memory ({e.formula}), more than {limit[1]} "
                            f"({gib(limit[0])}): set a smaller one")
    return found


def check_tensor_parallel(profile) -> None:
    """Refuse (LacoError) a vLLM tensor-parallel size the model's heads cannot be split by: vLLM divides the
    attention heads evenly over the ranks, and the key-value heads too (or copies them when the size is a
    multiple of their count). Checked on the dense config; a width-pruned model's heads are vLLM's to check."""
    size = profile.vllm.tensor_parallel_size
    if size == 1 or "throughput_vllm" not in profile.measurements:
        return
    m = profile.model
    try:
        shape = shape_of(model_config(m.spec, m.revision))
    except (KeyError, TypeError, ValueError, OSError):  # a config we cannot read: vLLM's own check stands
        return
    heads_split = shape.heads % size == 0
    kv_split = shape.kv_heads % size == 0 or size % shape.kv_heads == 0
    if not (heads_split and kv_split):
        fits = [n for n in range(2, shape.heads + 1) if shape.heads % n == 0
                and (shape.kv_heads % n == 0 or n % shape.kv_heads == 0)]
        raise LacoError(f"vllm.tensor_parallel_size {size} does not split the model's {shape.heads} attention heads "
                        f"({shape.kv_heads} key-value heads) evenly, which vLLM requires: sizes that do: "
                        f"{', '.join(map(str, fits)) or 'none'}")


def gib(n: int) -> str:
    return f"{n / GiB:.3g} GiB"
