"""Replacing and deleting decoder layers without breaking the model.

Three things must follow a change of the layer list, or the model breaks quietly:
- every attention module's `layer_idx` (the KV cache is indexed by it),
- `config.num_hidden_layers` (otherwise a reload re-creates the deleted layers with random
  weights),
- per-layer config lists such as `layer_types` (sliding vs full attention), which must keep the
  entry of each surviving layer.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from laco import LacoError


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's layer list (`model.model.layers` for every supported architecture)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise LacoError(f"{type(model).__name__} has no `model.layers` list of decoder layers")
    return layers


def per_layer_config_keys(config, n_layers: int) -> list[str]:
    """Config attributes that hold one entry per layer (e.g. `layer_types`)."""
    return sorted(
        key
        for key, value in vars(config).items()
        if not key.startswith("_") and isinstance(value, (list, tuple)) and len(value) == n_layers
    )


def set_layers(model: nn.Module, layers: Sequence[nn.Module], origin: Sequence[int]) -> list[str]:
    """Make `layers` the model's decoder layers.

    `origin[j]` is the index (in the current layer list) whose per-layer config entries the new
    layer j takes. Returns the config keys that were sliced.
    """
    if len(layers) != len(origin):
        raise ValueError("one origin index per layer is needed")
    config = model.config
    old_n = len(decoder_layers(model))
    sliced = per_layer_config_keys(config, old_n)
    for key in sliced:
        old = getattr(config, key)
        setattr(config, key, type(old)(old[i] for i in origin))
    model.model.layers = nn.ModuleList(layers)
    config.num_hidden_layers = len(layers)
    reindex_layers(model)
    return sliced


def delete_layers(model: nn.Module, indices: Sequence[int]) -> list[str]:
    """Delete the decoder layers at `indices`; see `set_layers` for what else is updated."""
    layers = decoder_layers(model)
    doomed = set(indices)
    if not doomed <= set(range(len(layers))):
        raise LacoError(f"layer indices {sorted(doomed)} out of range for {len(layers)} layers")
    keep = [i for i in range(len(layers)) if i not in doomed]
    return set_layers(model, [layers[i] for i in keep], keep)


def reindex_layers(model: nn.Module) -> None:
    """Set `layer_idx` of every module inside layer j to j (attention modules use it for the cache)."""
    for new_idx, layer in enumerate(decoder_layers(model)):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_idx


def parameter_count(model: nn.Module) -> int:
    """Number of parameters, tied tensors counted once (`parameters()` de-duplicates them)."""
    return sum(p.numel() for p in model.parameters())
