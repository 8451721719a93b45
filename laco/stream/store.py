"""A model folder as a layer store: the decoder layers stay on disk and come into memory one at a time.

The model is a skeleton: its decoder layers have their parameters on the meta device (shapes, no
memory), everything outside them (embeddings, final norm, head, rotary buffers) is real. Each layer
carries where its tensors live (`LayerSource`: the folder's shards, or a scratch file) and two hooks:
before its forward its tensors are put in, after it they go to the cache and the layer is empty again.
So the model's own forward, `collapse.DenseTrace` and `baselines.common.layer_profile` stream the layers
without knowing it, and the structure changes of surgery (set_layers, delete_layers) apply to the
skeleton as to a resident model: parameter counts, config and records come out the same.

Code that reads or changes weights outside a forward asks `StreamedModel.materialise(layer)` for a real
copy, and hands a new layer (a merge, a sliced layer) to `adopt`, which writes it to a scratch file
and returns a skeleton of it.

The cache keeps layers that were run, within a byte budget. When it is full it drops the layer that
sits lowest in the original model (`position`): the searches and dense passes run from some layer up
to the top, so the top layers are the ones every pass needs again.
"""

from __future__ import annotations

import copy
import itertools
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from laco import LacoError
from laco.loading import LoadedModel
from laco.stream.shards import ShardIndex

SOURCE_ATTR = "_laco_stream_source"
HOOKS_ATTR = "_laco_stream_hooks"


@dataclass(eq=False)
class LayerSource:
    """A layer's tensors: the names under `prefix` in `index`; `position` orders eviction."""

    index: ShardIndex
    prefix: str
    position: float

    def read(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        return self.index.read_many(self.prefix, dtype)


@dataclass
class LayerCache:
    """Tensors of layers that were in memory, kept within `capacity` bytes, lowest position dropped first."""

    capacity: int
    entries: dict[LayerSource, dict[str, torch.Tensor]] = field(default_factory=dict)
    hits: int = 0
    misses: int = 0

    @staticmethod
    def size(tensors: dict[str, torch.Tensor]) -> int:
        return sum(t.numel() * t.element_size() for t in tensors.values())

    def used(self) -> int:
        return sum(self.size(t) for t in self.entries.values())

    def take(self, source: LayerSource) -> dict[str, torch.Tensor] | None:
        """The tensors, removed from the cache (the caller owns them now)."""
        found = self.entries.pop(source, None)
        self.hits, self.misses = self.hits + (found is not None), self.misses + (found is None)
        return found

    def peek(self, source: LayerSource) -> dict[str, torch.Tensor] | None:
        """The tensors, left in the cache (to be read, or copied)."""
        found = self.entries.get(source)
        self.hits, self.misses = self.hits + (found is not None), self.misses + (found is None)
        return found

    def put(self, source: LayerSource, tensors: dict[str, torch.Tensor]) -> None:
        need = self.size(tensors)
        while self.entries and self.used() + need > self.capacity:
            lowest = min(self.entries, key=lambda s: s.position)
            if lowest.position >= source.position:
                return  # everything kept sits higher: this one is the one to drop
            del self.entries[lowest]
        if need <= self.capacity:
            self.entries[source] = tensors

    def forget(self, source: LayerSource) -> None:
        self.entries.pop(source, None)


def _set_tensors(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Give `module` these parameters (names relative to it); every parameter must be among them."""
    missing = [name for name, _ in module.named_parameters() if name not in tensors]
    if missing:
        raise LacoError(f"the checkpoint lacks {', '.join(missing[:3])} of a decoder layer")
    for name, tensor in tensors.items():
        owner, _, leaf = name.rpartition(".")
        target = module.get_submodule(owner)
        if leaf in target._parameters:
            target._parameters[leaf] = nn.Parameter(tensor, requires_grad=False)
        elif leaf in target._buffers:
            target._buffers[leaf] = tensor
        else:
            raise LacoError(f"the checkpoint has {name}, which the layer {type(module).__name__} does not")


def _to_meta(module: nn.Module) -> dict[str, torch.Tensor]:
    """Take the parameters out of `module` (left on the meta device); returns them."""
    taken = {}
    for name, param in list(module.named_parameters()):
        owner, _, leaf = name.rpartition(".")
        taken[name] = param.data
        module.get_submodule(owner)._parameters[leaf] = nn.Parameter(
            torch.empty(param.shape, dtype=param.dtype, device="meta"), requires_grad=False)
    return taken


def _discard(cache: LayerCache, source: LayerSource, file: Path) -> None:
    cache.forget(source)
    file.unlink(missing_ok=True)


def is_streamed(layer: nn.Module) -> bool:
    return getattr(layer, SOURCE_ATTR, None) is not None


class LayerStore:
    """The layers of one model folder, read on demand in `dtype`, with a cache and a scratch folder."""

    def __init__(self, index: ShardIndex, dtype: torch.dtype, cache_bytes: int, scratch: Path | None = None):
        self.index, self.dtype = index, dtype
        self.cache = LayerCache(max(0, int(cache_bytes)))
        self.scratch = scratch
        self._spilled = itertools.count()
        self.reads = 0

    def attach(self, layer: nn.Module, source: LayerSource) -> nn.Module:
        """Make `layer` (parameters on meta) load its tensors from `source` around each forward."""
        def onload(module, args):
            _set_tensors(module, self.tensors(source, take=True))

        def offload(module, args, output):
            self.cache.put(source, _to_meta(module))

        pre = layer.register_forward_pre_hook(onload, prepend=True)
        post = layer.register_forward_hook(offload)
        setattr(layer, SOURCE_ATTR, source)
        setattr(layer, HOOKS_ATTR, (pre.id, post.id))
        return layer

    def tensors(self, source: LayerSource, *, take: bool) -> dict[str, torch.Tensor]:
        """A layer's tensors: from the cache (taken out of it, or shared when only read) or from disk."""
        found = self.cache.take(source) if take else self.cache.peek(source)
        if found is None:
            self.reads += 1
            found = source.read(self.dtype)
        return found

    def materialise(self, layer: nn.Module) -> nn.Module:
        """A real copy of a streamed layer, owning its tensors; other modules are returned as they are."""
        source = getattr(layer, SOURCE_ATTR, None)
        if source is None:
            return layer
        real = copy.deepcopy(layer)  # meta parameters: nothing is copied but the structure
        pre, post = getattr(real, HOOKS_ATTR)
        real._forward_pre_hooks.pop(pre, None)
        real._forward_hooks.pop(post, None)
        delattr(real, SOURCE_ATTR)
        delattr(real, HOOKS_ATTR)
        cached = self.cache.peek(source)  # a copy of a cached layer: the cache keeps its own for the next pass
        if cached is None:
            self.reads += 1
        _set_tensors(real, {n: t.clone() for n, t in cached.items()} if cached is not None else source.read(self.dtype))
        return real

    def adopt(self, layer: nn.Module, position: float) -> nn.Module:
        """Write a new real layer to the scratch folder; return it emptied, streaming from there."""
        if is_streamed(layer):
            return layer
        if self.scratch is None:
            raise LacoError("this streamed model has no scratch folder for the layers it creates")
        self.scratch.mkdir(parents=True, exist_ok=True)
        file = self.scratch / f"layer-{next(self._spilled):05d}.safetensors"
        save_file({name: t.detach().contiguous() for name, t in layer.state_dict().items()}, file, metadata={"format": "pt"})
        tensors = _to_meta(layer)
        source = LayerSource(ShardIndex(file), "", position)
        self.cache.put(source, tensors)
        weakref.finalize(layer, _discard, self.cache, source, file)  # a rejected path of a search: its file goes
        return self.attach(layer, source)

    def layer_tensors(self, layer: nn.Module) -> dict[str, torch.Tensor]:
        """What a layer of the model holds, for writing it out: from its source, or a real module's own."""
        source = getattr(layer, SOURCE_ATTR, None)
        if source is None:
            return {name: t.detach() for name, t in layer.state_dict().items()}
        return self.tensors(source, take=False)


@dataclass
class StreamedModel(LoadedModel):
    """A loaded model whose decoder layers stream from `store` (see the module docstring)."""

    store: LayerStore = None
    folder: Path = None  # the model folder it reads

    def materialise(self, layer: nn.Module) -> nn.Module:
        return self.store.materialise(layer)

    def adopt(self, layer: nn.Module, position: int, replaces=()) -> nn.Module:
        for old in replaces:
            if old is not layer and is_streamed(old):  # out of the model: its cached tensors only take room
                self.store.cache.forget(getattr(old, SOURCE_ATTR))
        return self.store.adopt(layer, position)
