"""Shaped stand-ins: `synthetic:NAME` is a model with the exact config of a published model and seeded
random weights. It times memory, disk, FLOPs and seconds as the real model would, and nothing else:
every record of it says "synthetic weights: speed and memory only".

    synthetic:llama2-7b                      bfloat16, seed 0
    synthetic:llama2-13b,dtype=float32,seed=1

The configs are data (laco/data/synthetic_models.toml, each with its source). The folder is built on
first use under the user cache dir (`laco.cache.cache_root()`), keyed by name, dtype, seed and a
digest of the config, and written through `laco.atomic.folder(..., if_exists="keep")`, so builders
running at once never tear it. It is written one decoder layer at a time: one safetensors shard per
layer (and one for the embeddings, final norm and head), an index, config.json and the tokenizer, so
the whole model is never in memory.

Weights: every matrix is drawn from N(0, initializer_range) by a generator seeded from (seed, tensor
name), norms are ones, biases zeros; the same seed gives the same files on the same machine and torch.

Tokenizer: the embedded SmolLM2 tokenizer (49,152 tokens), loaded by the `load_tokenizer` that
`laco.loading` passes in (this module does not import it: loading imports this one). A model with a smaller vocabulary (Llama 2:
32,000) gets a copy cut to its first `vocab_size` tokens, keeping the merges whose parts and result are
among them, so it never produces an id the model lacks. The cut is recorded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from laco import LacoError
from laco.config import Strict, validate

PREFIX = "synthetic:"
DATA_FILE = "data/synthetic_models.toml"
WEIGHTS_NOTE = "synthetic weights: speed and memory only"
GENERATOR = "normal(0, initializer_range) per matrix, seeded by sha256(seed:name); norms 1, biases 0; v1"
TOKENIZER_FROM = "smollm2-135m"
DTYPES = ("bfloat16", "float16", "float32")


class SyntheticModel(Strict):
    source: str
    needs_remote_code: bool = False
    config: dict[str, Any]

    @property
    def model_id(self) -> str:
        """The published model whose shape this is: the first field of `source`."""
        return self.source.split(",")[0].strip()


@dataclass(frozen=True)
class SyntheticSpec:
    name: str
    dtype: str = "bfloat16"
    seed: int = 0


@lru_cache(maxsize=1)
def known() -> dict[str, SyntheticModel]:
    """The shapes of laco/data/synthetic_models.toml, by name."""
    from laco.config import tomllib

    text = resources.files("laco").joinpath(DATA_FILE).read_text(encoding="utf-8")
    return {name: validate(entry, SyntheticModel, f"laco/{DATA_FILE} [{name}]") for name, entry in tomllib.loads(text).items()}


def stand_in_for(spec: str) -> str | None:
    """The entry that gives the shape of `spec` without its files: NAME of `synthetic:NAME[,...]`, or the
    entry whose `source` names the model id `spec` (a hub model not on this machine); None: no entry."""
    if spec.startswith(PREFIX):
        name = spec.removeprefix(PREFIX).split(",")[0]
        return name if name in known() else None
    return next((name for name, entry in known().items() if entry.model_id == spec), None)


def parse(spec: str) -> SyntheticSpec:
    """`synthetic:NAME[,dtype=D][,seed=N]`; an unknown name or option is one line naming the known ones."""
    name, *options = spec.removeprefix(PREFIX).split(",")
    if name not in known():
        raise LacoError(f"unknown synthetic model {name!r}; known: {', '.join(known())}")
    values: dict[str, Any] = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep or key not in ("dtype", "seed") or key in values:
            raise LacoError(f"{spec}: options are dtype=D and seed=N, each at most once (got {option!r})")
        values[key] = value
    if values.get("dtype", "bfloat16") not in DTYPES:
        raise LacoError(f"{spec}: dtype must be one of {', '.join(DTYPES)}")
    if not values.get("seed", "0").isdigit():
        raise LacoError(f"{spec}: seed must be a non-negative integer")
    if known()[name].needs_remote_code:
        raise LacoError(f"synthetic:{name} is not built: its architecture needs the model's own modelling code "
                        "(remote code), which is not shipped; its shape is listed for memory and disk figures only")
    return SyntheticSpec(name, values.get("dtype", "bfloat16"), int(values.get("seed", 0)))


def recipe(spec: SyntheticSpec) -> dict:
    """Everything that decides the files' content."""
    return {"name": spec.name, "config": known()[spec.name].config, "dtype": spec.dtype, "seed": spec.seed,
            "generator": GENERATOR, "tokenizer_from": TOKENIZER_FROM}


def recipe_digest(spec: SyntheticSpec) -> str:
    return hashlib.sha256(json.dumps(recipe(spec), sort_keys=True).encode()).hexdigest()


def folder_of(spec: SyntheticSpec) -> Path:
    from laco.cache import cache_root

    return cache_root() / "synthetic" / f"{spec.name}-{spec.dtype}-seed{spec.seed}-{recipe_digest(spec)[:12]}"


def description(spec: SyntheticSpec, load_tokenizer: Callable) -> dict:
    """What the source record says of a synthetic model (`source.synthetic`)."""
    entry = known()[spec.name]
    vocab = entry.config["vocab_size"]
    return {"synthetic": True, "note": WEIGHTS_NOTE, "name": spec.name, "config_source": entry.source,
            "dtype": spec.dtype, "seed": spec.seed, "generator": GENERATOR,
            "tokenizer": {"from": TOKENIZER_FROM, "vocab_size": min(vocab, tokenizer_vocab_size(load_tokenizer))}}


def source_fields(spec_text: str, load_tokenizer: Callable) -> dict:
    """The `laco.loading.ModelSource` fields of a synthetic spec; nothing is built or written here."""
    spec = parse(spec_text)
    return {"spec": spec_text, "kind": "synthetic", "model_id": PREFIX + spec.name, "path": str(folder_of(spec)),
            "sha256": recipe_digest(spec), "synthetic": description(spec, load_tokenizer)}


def built_folder(spec_text: str, load_tokenizer: Callable) -> Path:
    """The folder of a synthetic spec, built on first use."""
    spec = parse(spec_text)
    folder = folder_of(spec)
    if not (folder / "config.json").is_file():
        build(spec, folder, load_tokenizer)
    return folder


# ---- building ---------------------------------------------------------------------------------------

def transformers_config(name: str, dtype: str):
    from transformers import AutoConfig

    values = dict(known()[name].config)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    config.dtype = dtype
    return config


def tensor_seed(seed: int, name: str) -> int:
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:15], 16)


def initial_tensor(name: str, shape: torch.Size, dtype: torch.dtype, seed: int, std: float) -> torch.Tensor:
    if len(shape) == 1:
        return torch.ones(shape, dtype=dtype) if "norm" in name else torch.zeros(shape, dtype=dtype)
    generator = torch.Generator().manual_seed(tensor_seed(seed, name))
    return torch.empty(shape, dtype=dtype).normal_(0.0, std, generator=generator)


def build(spec: SyntheticSpec, folder: Path, load_tokenizer: Callable) -> Path:
    """Write the model one shard at a time (first the embeddings, norm and head, then each layer)."""
    from laco.atomic import folder as atomic_folder
    from laco.atomic import write_json
    from laco.memory import meta_model
    from laco.stream.shards import ShardWriter, layer_groups

    config = transformers_config(spec.name, spec.dtype)
    dtype = getattr(torch, spec.dtype)
    skeleton = meta_model(config, dtype=dtype)
    groups = layer_groups(skeleton)
    state = skeleton.state_dict(keep_vars=True)
    std = float(config.initializer_range)
    with atomic_folder(folder, if_exists="keep") as tmp:
        writer = ShardWriter(tmp, len(groups))
        for names in groups:
            writer.write({name: initial_tensor(name, state[name].shape, dtype, spec.seed, std) for name in names})
        writer.finish()
        config.save_pretrained(tmp)
        generation_config(config).save_pretrained(tmp)
        tokenizer = synthetic_tokenizer(config.vocab_size, load_tokenizer(TOKENIZER_FROM))
        tokenizer.save_pretrained(tmp)
        write_json(tmp / "synthetic.json",
                   {**description(spec, load_tokenizer), "recipe": recipe(spec), "torch": torch.__version__})
    return folder


def generation_config(config):
    from transformers import GenerationConfig

    return GenerationConfig.from_model_config(config)


# ---- the tokenizer ----------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def tokenizer_vocab_size(load_tokenizer: Callable) -> int:
    """The embedded tokenizer's vocabulary, read from its model (no weights loaded); 49,152 for SmolLM2."""
    try:
        return len(load_tokenizer(TOKENIZER_FROM))
    except (LacoError, OSError):
        return 49152


def cut_vocabulary(tokenizer_json: dict, vocab_size: int) -> dict:
    """A BPE tokenizer's JSON keeping the ids below `vocab_size` and the merges that stay inside them."""
    model = tokenizer_json["model"]
    if model.get("type") != "BPE":
        raise LacoError(f"the embedded tokenizer is {model.get('type')}, not BPE: it cannot be cut to {vocab_size} tokens")
    kept = {token: i for token, i in model["vocab"].items() if i < vocab_size}
    merges = []
    for merge in model["merges"]:
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        if left in kept and right in kept and left + right in kept:
            merges.append(merge)
    out = json.loads(json.dumps(tokenizer_json))
    out["model"]["vocab"], out["model"]["merges"] = kept, merges
    out["added_tokens"] = [t for t in tokenizer_json.get("added_tokens", []) if t["id"] < vocab_size]
    return out


def synthetic_tokenizer(vocab_size: int, base):
    """The embedded tokenizer `base`, cut to `vocab_size` tokens when the model has fewer than it."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    if len(base) <= vocab_size:
        return base
    cut = cut_vocabulary(json.loads(base.backend_tokenizer.to_str()), vocab_size)
    specials = {k: getattr(base, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token") if getattr(base, k)}
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(cut)), **specials)
