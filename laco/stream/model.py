"""Opening a model folder as a streamed model, and writing a pruned streamed model shard by shard.

`open_streamed` makes the skeleton (`laco.memory.meta_model`), reads the tensors outside the decoder
layers (embeddings, final norm, head), and attaches a `LayerSource` to every layer. `save_streamed`
writes what `save_pretrained` would: one shard per output layer plus one for the rest, the index,
config.json (with the new layer count and per-layer entries, which surgery already set on the
skeleton), the generation config, the tokenizer (and a remote-code model's code files).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from laco import LacoError
from laco.architectures import architecture_of, inspect_config
from laco.stream.shards import ShardIndex, ShardWriter, unique_state_names
from laco.stream.store import LayerSource, LayerStore, StreamedModel


def local_folder(spec: str):
    """(source, folder) of a model that can stream: its weights must be safetensors in a local folder."""
    from laco.loading import model_folder, resolve

    source = resolve(spec)
    folder = model_folder(source)
    if folder is None:
        raise LacoError(f"layer-by-layer pruning reads a local model folder; {spec} is a hub id (download it and "
                        "pass its folder)")
    return source, Path(folder)


def torch_dtype(dtype: str, config) -> torch.dtype:
    from laco.loading import DTYPES

    if dtype not in DTYPES:
        raise LacoError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    if dtype == "auto":
        found = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
        return getattr(torch, found) if isinstance(found, str) else (found or torch.float32)
    return DTYPES[dtype]


def open_streamed(spec: str, *, dtype: str = "float32", cache_bytes: int = 0, scratch: Path | None = None,
                  trust_remote_code: bool = False) -> StreamedModel:
    """The model of `spec` with its decoder layers left on disk (see `laco.stream.store`)."""
    from transformers import AutoConfig, AutoTokenizer

    from laco.memory import meta_model

    source, folder = local_folder(spec)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    inspect_config(config, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    kind = torch_dtype(dtype, config)
    skeleton = meta_model(config, trust_remote_code=trust_remote_code, dtype=kind)
    arch = architecture_of(skeleton)
    index = ShardIndex(folder)
    store = LayerStore(index, kind, cache_bytes, scratch)
    load_outside_layers(skeleton, index, arch.layers_path, kind)
    for i, layer in enumerate(skeleton.get_submodule(arch.layers_path)):
        store.attach(layer, LayerSource(index, f"{arch.layers_path}.{i}.", i))
    return StreamedModel(skeleton, tokenizer, source, arch, store=store, folder=folder)


@torch.no_grad()
def load_outside_layers(skeleton, index: ShardIndex, layers_path: str, dtype: torch.dtype) -> None:
    """Put the real tensors of everything outside the decoder layers into the skeleton (a tied head
    shares the embeddings' tensor again)."""
    for name in unique_state_names(skeleton):
        if name.startswith(f"{layers_path}."):
            continue
        if name not in index.files:
            raise LacoError(f"the checkpoint lacks {name}")
        owner, _, leaf = name.rpartition(".")
        module = skeleton.get_submodule(owner)
        tensor = index.read(name, dtype)
        if leaf in module._parameters:
            module._parameters[leaf] = torch.nn.Parameter(tensor, requires_grad=False)
        else:
            module._buffers[leaf] = tensor
    skeleton.tie_weights()


def save_streamed(loaded: StreamedModel, model, folder: Path) -> None:
    """Write the pruned model into `folder` (a temporary folder of `laco.atomic.folder`), all but laco.json."""
    from laco.architectures import layer_list_path

    path = layer_list_path(model)
    layers = model.get_submodule(path)
    writer = ShardWriter(folder, len(layers) + 1)
    rest = {}
    state = model.state_dict(keep_vars=True)
    for name in unique_state_names(model):
        if not name.startswith(f"{path}."):
            if state[name].device.type == "meta":
                raise LacoError(f"{name} was never read: cannot write it")
            rest[name] = state[name].detach()
    writer.write(rest)
    for j, layer in enumerate(layers):
        writer.write({f"{path}.{j}.{name}": t for name, t in loaded.store.layer_tensors(layer).items()})
    writer.finish()
    config = model.config
    config.dtype = next(iter(rest.values())).dtype
    config.save_pretrained(folder)
    if (loaded.folder / "generation_config.json").is_file():
        shutil.copy(loaded.folder / "generation_config.json", folder / "generation_config.json")
    loaded.tokenizer.save_pretrained(folder)
    if getattr(config, "auto_map", None):  # a remote-code model's own modelling files
        for file in loaded.folder.glob("*.py"):
            shutil.copy(file, folder / file.name)
