"""Safetensors folders read one tensor at a time and written one shard at a time.

`ShardIndex` reads a model folder's weights (a single `model.safetensors` or shards with
`model.safetensors.index.json`): each read opens the file, copies one tensor out in the wanted dtype
and closes it again, so the process never keeps a mapping of the file (a mapped page that was read
counts in the resident set until the file is closed). `ShardWriter` writes the shards of a folder that
is being built (inside `laco.atomic.folder`) and then their index, as transformers names them.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from laco import LacoError
from laco.atomic import write_json

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"


class ShardIndex:
    """Where each tensor of a safetensors folder (or one file) lives."""

    def __init__(self, path: str | Path):
        path = Path(path)
        if path.is_file():
            self.files = {name: path for name in _names_in(path)}
        elif (path / INDEX_FILE).is_file():
            weight_map = json.loads((path / INDEX_FILE).read_text(encoding="utf-8"))["weight_map"]
            self.files = {name: path / file for name, file in weight_map.items()}
        elif (path / SINGLE_FILE).is_file():
            self.files = {name: path / SINGLE_FILE for name in _names_in(path / SINGLE_FILE)}
        else:
            raise LacoError(f"no safetensors weights in {path}: layer-by-layer pruning reads {SINGLE_FILE} or {INDEX_FILE}")

    def names_under(self, prefix: str) -> list[str]:
        return [name for name in self.files if name.startswith(prefix)]

    def read(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """One tensor, copied out of the file (never a view of a mapping), in `dtype` if given."""
        with safe_open(self.files[name], framework="pt") as f:
            tensor = f.get_tensor(name)
            return tensor.to(dtype=dtype or tensor.dtype, copy=True)

    def read_many(self, prefix: str, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
        """Every tensor under `prefix`, by name relative to it."""
        return {name[len(prefix):]: self.read(name, dtype) for name in self.names_under(prefix)}


def _names_in(file: Path) -> list[str]:
    with safe_open(file, framework="pt") as f:
        return list(f.keys())


class ShardWriter:
    """Shards `model-0000k-of-0000n.safetensors` written in turn, then the index of all of them."""

    def __init__(self, folder: Path, n_shards: int):
        self.folder, self.n_shards = Path(folder), n_shards
        self.weight_map: dict[str, str] = {}
        self.total_size = 0
        self.written = 0

    def write(self, tensors: dict[str, torch.Tensor]) -> None:
        if self.written >= self.n_shards:
            raise ValueError(f"all {self.n_shards} shards are written")
        self.written += 1
        name = f"model-{self.written:05d}-of-{self.n_shards:05d}.safetensors"
        save_file({k: v.contiguous() for k, v in tensors.items()}, self.folder / name, metadata={"format": "pt"})
        (self.folder / name).chmod(0o644)  # safetensors makes it private; the output is for every reader
        for key, tensor in tensors.items():
            self.weight_map[key] = name
            self.total_size += tensor.numel() * tensor.element_size()

    def finish(self) -> None:
        if self.written != self.n_shards:
            raise ValueError(f"{self.written} of {self.n_shards} shards written")
        write_json(self.folder / INDEX_FILE, {"metadata": {"total_size": self.total_size}, "weight_map": self.weight_map})


def unique_state_names(model: nn.Module) -> list[str]:
    """State-dict names, a tensor shared under two names (tied embeddings) listed once."""
    seen: set[int] = set()
    names = []
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) not in seen:
            seen.add(id(tensor))
            names.append(name)
    return names


def layer_groups(model: nn.Module) -> list[list[str]]:
    """State-dict names grouped into shards: everything outside the decoder layers, then each layer."""
    from laco.architectures import layer_list_path

    path = layer_list_path(model)
    n = len(model.get_submodule(path))
    names = unique_state_names(model)
    layers = [[name for name in names if name.startswith(f"{path}.{i}.")] for i in range(n)]
    rest = [name for name in names if not name.startswith(f"{path}.")]
    return [rest, *layers]
