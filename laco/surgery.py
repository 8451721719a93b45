"""Replacing and deleting decoder layers without breaking the model.

Three things must follow a change of the layer list, or the model breaks quietly:
- every attention module's `layer_idx` (the KV cache is indexed by it),
- `config.num_hidden_layers` (otherwise a reload re-creates the deleted layers with random
  weights),
- every per-layer config entry: any config list (also inside a dict such as `rope_parameters`)
  whose length is the layer count, e.g. `layer_types` (sliding vs full attention), keeps the entry
  of each surviving layer; and the integers that summarise `layer_types` are recomputed from the
  new list (`LAYER_TYPE_SUMMARIES`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from laco import LacoError
from laco.architectures import final_norm_name, layer_list_path

# Lists that are not per layer although their length may equal the layer count, where the generic
# length rule would be wrong: one entry per rotary frequency (head_dim / 2: Phi-3's longrope
# factors), per class name (`architectures`), per token id (`eos_token_id` and the like).
NOT_PER_LAYER = frozenset({"long_factor", "short_factor", "architectures"})


def _not_per_layer(key: str) -> bool:
    return key.startswith("_") or key in NOT_PER_LAYER or key.endswith(("token_id", "token_ids"))


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder's layer list, found from the model (`architectures.layer_list_path`)."""
    return model.get_submodule(layer_list_path(model))


def decoder(model: nn.Module) -> nn.Module:
    """The module that owns the layer list (`model.model` in transformers' causal LMs)."""
    return model.get_submodule(layer_list_path(model).rpartition(".")[0])


def final_norm(model: nn.Module) -> nn.Module:
    """The norm the decoder applies after its last layer."""
    return decoder(model).get_submodule(final_norm_name(model))


def per_layer_config_keys(config, n_layers: int) -> list[str]:
    """Config entries that hold one value per layer, as dotted paths (`layer_types`, `rope_parameters.x`)."""
    keys = []

    def walk(prefix: str, items):
        for key, value in items:
            if not isinstance(key, str) or _not_per_layer(key):
                continue
            if isinstance(value, (list, tuple)) and len(value) == n_layers:
                keys.append(prefix + key)
            elif isinstance(value, dict):
                walk(f"{prefix}{key}.", value.items())

    walk("", vars(config).items())
    return sorted(keys)


def _get(config, path: str):
    head, *rest = path.split(".")
    value = getattr(config, head)
    for key in rest:
        value = value[key]
    return value


def _set(config, path: str, value) -> None:
    head, *rest = path.split(".")
    if not rest:
        setattr(config, head, value)
        return
    container = getattr(config, head)
    for key in rest[:-1]:
        container = container[key]
    container[rest[-1]] = value


def _first_sliding(types: list[str]) -> int | None:
    """Qwen2/Qwen3 `max_window_layers`: layers from this index on use sliding attention."""
    if "sliding_attention" not in types:
        return None
    first = types.index("sliding_attention")
    return first if all(t == "sliding_attention" for t in types[first:]) else None


def _full_attention_period(types: list[str]) -> int | None:
    """Gemma 3 `sliding_window_pattern`: every p-th layer uses full attention; None when no p fits."""
    for p in range(1, len(types) + 1):
        if all(t == ("full_attention" if (i + 1) % p == 0 else "sliding_attention") for i, t in enumerate(types)):
            return p
    return None


# Integers that describe `layer_types` by a rule. transformers builds `layer_types` from them only when
# a config has no list, but other readers of config.json (and a person) may use them: after a depth
# change they are recomputed from the new list, or set to None when no value of the rule fits.
LAYER_TYPE_SUMMARIES = {
    "max_window_layers": _first_sliding,
    "sliding_window_pattern": _full_attention_period,
    "_sliding_window_pattern": _full_attention_period,
}


def _resummarise(config) -> list[str]:
    types = getattr(config, "layer_types", None)
    changed = []
    if not types:
        return changed
    for key, rule in LAYER_TYPE_SUMMARIES.items():
        old = getattr(config, key, None)
        if not isinstance(old, int) or isinstance(old, bool):
            continue
        new = rule(list(types))
        if key == "max_window_layers" and new is None and "sliding_attention" not in types:
            continue  # no sliding layer: the threshold is beyond the model either way
        if new != old:
            setattr(config, key, new)
            changed.append(key)
    return changed


def set_layers(model: nn.Module, layers: Sequence[nn.Module], origin: Sequence[int]) -> list[str]:
    """Make `layers` the model's decoder layers.

    `origin[j]` is the index (in the current layer list) whose per-layer config entries the new
    layer j takes. Returns the config keys that were sliced or recomputed.
    """
    if len(layers) != len(origin):
        raise ValueError("one origin index per layer is needed")
    config = model.config
    path = layer_list_path(model)
    old_n = len(model.get_submodule(path))
    sliced = per_layer_config_keys(config, old_n)
    for key in sliced:
        old = _get(config, key)
        _set(config, key, type(old)(old[i] for i in origin))
    owner, _, name = path.rpartition(".")
    setattr(model.get_submodule(owner), name, nn.ModuleList(layers))
    config.num_hidden_layers = len(layers)
    reindex_layers(model)
    return sliced + (_resummarise(config) if "layer_types" in sliced else [])


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


class _PassThrough(nn.Module):
    """Stands in for a decoder layer: records what the layer would be called with, returns its input."""

    def __init__(self, layer: nn.Module, record):
        super().__init__()
        self.record = record
        if hasattr(layer, "attention_type"):  # the decoder picks each layer's mask by it
            self.attention_type = layer.attention_type

    def forward(self, hidden_states, *args, **kwargs):
        self.record(hidden_states, kwargs)
        return hidden_states


@torch.no_grad()
def layer_arguments(model: nn.Module, batch: dict) -> tuple[torch.Tensor, list[dict]]:
    """The stream entering layer 0 and the keyword arguments (masks, rotary embeddings) of every layer,
    from the decoder's own forward with its layers passed through rather than run (SliceGPT's rotation
    needs nothing else of a dense pass)."""
    inputs, kwargs = [], []

    def record(hidden, layer_kwargs):
        inputs.append(hidden)
        kwargs.append(layer_kwargs)

    owner, layers = decoder(model), decoder_layers(model)
    name = layer_list_path(model).rpartition(".")[2]
    setattr(owner, name, nn.ModuleList(_PassThrough(layer, record) for layer in layers))
    try:
        owner(**batch, use_cache=False)
    finally:
        setattr(owner, name, layers)
    return inputs[0], kwargs
