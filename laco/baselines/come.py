"""CoMe (Wang et al., arXiv:2510.15304, 2025, "Layer as Puzzle Pieces: Compressing Large Language Models
through Layer Concatenation"): concatenation-based merging of adjacent layers, without its
distillation step.

Each step, on the current model and the calibration tokens (padding excluded):
1. the adjacent pair (i, i+1) whose input of i and output of i+1 have the smallest angular
   distance, arccos(cos) / pi, is chosen. (CoMe's code uses the last token of each sample; with
   the project's few short calibration sentences every token is used.)
2. Channel sensitivity = mean |activation| entering o_proj / down_proj x the L1 norm of the
   matching o_proj / down_proj column. A KV group's sensitivity is the sum over the channels of
   its query heads.
3. The merged layer keeps the original widths: of the G KV groups, round(G * BI_i / (BI_i +
   BI_{i+1})) most sensitive come from layer i and the rest from layer i+1 (each with its query
   heads); the MLP's intermediate channels are split the same way. q/k/v rows and o_proj
   columns (gate/up rows and down_proj columns) of the chosen units are concatenated, so the
   merged layer computes the chosen parts of both layers side by side. Norm weights (and
   Qwen3's q_norm/k_norm) are averaged; an o_proj/down_proj bias would be mixed by the same
   shares.
4. Repeat until the target layer count (one-layer granule).
"""

from __future__ import annotations

import copy
import time

import torch
from torch import nn
from tqdm.auto import tqdm

from laco.baselines.common import (
    AttentionLayout,
    layer_profile,
    reject_unknown,
    require_llama_like,
    sliced_linear,
    start_depth_pruning,
)
from laco.memory import LAYER_CACHE, all_layers
from laco.record import pruned
from laco.surgery import decoder_layers, set_layers


def top_units(sensitivity: torch.Tensor, n: int) -> torch.Tensor:
    """The n most sensitive units, in their original order."""
    return torch.topk(sensitivity, n).indices.sort().values.cpu()


@torch.no_grad()
def fill_concatenated(target: nn.Linear, parts: list[nn.Linear], dim: int) -> None:
    """Write the concatenation of `parts` (sliced linears) into `target`, which has the same shape."""
    target.weight.copy_(torch.cat([p.weight for p in parts], dim=dim))
    if target.bias is not None and dim == 0:
        target.bias.copy_(torch.cat([p.bias for p in parts]))


@torch.no_grad()
def concat_merge(arch, a: nn.Module, b: nn.Module, stats_a: dict, stats_b: dict, share_a: float) -> tuple[nn.Module, dict]:
    """The layer made of the most sensitive units of `a` and `b`; `share_a` of each width from `a`."""
    merged = copy.deepcopy(a)
    layout = AttentionLayout.of(a.self_attn)
    G = layout.kv_heads
    groups_a = round(G * share_a)

    def group_sensitivity(layer, stats):
        per_channel = stats["o_proj"] * layer.self_attn.o_proj.weight.float().abs().sum(0)
        return per_channel.view(G, -1).sum(1)

    chosen_a = top_units(group_sensitivity(a, stats_a), groups_a)
    chosen_b = top_units(group_sensitivity(b, stats_b), G - groups_a)
    attn = merged.self_attn
    picks = [(s, g) for s, g in ((a.self_attn, chosen_a), (b.self_attn, chosen_b)) if len(g)]
    for name in ("q_proj", "k_proj", "v_proj"):
        channels = layout.query_channels if name == "q_proj" else layout.kv_channels
        fill_concatenated(getattr(attn, name), [sliced_linear(getattr(s, name), rows=channels(g)) for s, g in picks], 0)
    fill_concatenated(attn.o_proj, [sliced_linear(s.o_proj, cols=layout.query_channels(g)) for s, g in picks], 1)

    width = a.mlp.down_proj.in_features
    channels_a = round(width * share_a)

    def channel_sensitivity(layer, stats):
        return stats["down_proj"] * layer.mlp.down_proj.weight.float().abs().sum(0)

    kept_a = top_units(channel_sensitivity(a, stats_a), channels_a)
    kept_b = top_units(channel_sensitivity(b, stats_b), width - channels_a)
    mlp = merged.mlp
    parts = [(s.mlp, c) for s, c in ((a, kept_a), (b, kept_b)) if len(c)]
    for name in ("gate_proj", "up_proj"):
        fill_concatenated(getattr(mlp, name), [sliced_linear(getattr(m, name), rows=c) for m, c in parts], 0)
    fill_concatenated(mlp.down_proj, [sliced_linear(m.down_proj, cols=c) for m, c in parts], 1)

    for out_proj in ("self_attn.o_proj", "mlp.down_proj"):  # output biases: both layers' shares
        bias = merged.get_submodule(out_proj).bias
        if bias is not None:
            bias.copy_(share_a * a.get_submodule(out_proj).bias + (1 - share_a) * b.get_submodule(out_proj).bias)
    for name in arch.kept:  # norms
        merged.get_submodule(name).weight.copy_((a.get_submodule(name).weight + b.get_submodule(name).weight) / 2)
    detail = {"kv_groups": [chosen_a.tolist(), chosen_b.tolist()], "mlp_channels_from": [channels_a, width - channels_a]}
    return merged, detail


def peak_memory(shape, *, streamed: bool, **_) -> dict[str, int]:
    """A dense forward per merge, with per-channel statistics; a merge holds the pair, the merged copy
    and the sliced parts it is filled from, and scores channels on a float32 |W| of the largest weight."""
    parts = {"calibration states": 3 * shape.hidden_state_bytes + shape.tokens * shape.intermediate * 4
             + shape.n_layers * (shape.hidden + shape.intermediate) * 4,
             "one layer's forward": shape.layer_activation_bytes(),
             "sensitivity scratch (float32)": 2 * shape.largest_tensor_params * 4}
    if streamed:
        return {**parts, "weights outside the layers": shape.non_layer_bytes, "layers in memory": 4 * shape.layer_bytes,
                LAYER_CACHE: all_layers(shape)}  # a dense pass per merge
    return {**parts, "weights": shape.weight_bytes, "merged copy and its parts": 2 * shape.layer_bytes}


def prune_work(shape, *, target_ratio: float | None = None, target_layers: int | None = None, **_):
    """A dense pass over the model as it is before each merge (one merge per layer removed), and the merge."""
    from laco.work import Work, dense_passes, layers_removed

    removed = layers_removed(shape, target_ratio, target_layers)
    return Work(dense_passes(shape.n_layers, removed), memory_bytes=removed * 4 * shape.layer_bytes)


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          calibration_file: str | dict | None = None, seed: int = 0, progress: bool = True, **unknown):
    reject_unknown("come", unknown)
    require_llama_like(loaded.arch, "come")
    job = start_depth_pruning(loaded, sentences, target_ratio, target_layers)
    model, n, keep = job.model, job.n_layers, job.keep

    start = time.perf_counter()
    sources = [[i] for i in range(n)]
    steps = []
    bar = tqdm(total=n - keep, desc="CoMe merges", disable=not progress, leave=False)
    while len(sources) > keep:
        layers = list(decoder_layers(model))
        profile = layer_profile(model, job.batch, channels=True)
        i = min(range(len(layers) - 1), key=profile.pair_distance.__getitem__)
        bi_a, bi_b = profile.block_influence[i], profile.block_influence[i + 1]
        share = bi_a / (bi_a + bi_b) if bi_a + bi_b > 0 else 0.5
        merged, detail = concat_merge(loaded.arch, loaded.materialise(layers[i]), loaded.materialise(layers[i + 1]),
                                      profile.channels[i], profile.channels[i + 1], share)
        merged = loaded.adopt(merged, sources[i][0], replaces=layers[i : i + 2])
        origin = [j for j in range(len(layers)) if j != i + 1]
        set_layers(model, [merged if j == i else layers[j] for j in origin], origin)
        steps.append({"pair": [i, i + 1], "layers": sources[i] + sources[i + 1],
                      "angular_distance": profile.pair_distance[i], "block_influence": [bi_a, bi_b],
                      "share_first": share, **detail})
        sources[i : i + 2] = [sources[i] + sources[i + 1]]
        bar.update()
    bar.close()
    seconds = time.perf_counter() - start

    return pruned(
        loaded, "come", sentences, calibration=calibration_file,
        config={"pair": "smallest angular distance, input of i to output of i+1, all non-padding tokens",
                "split": "widths shared in proportion to Block Influence (CoMe's psu=1, min_max=0)",
                "sensitivity": "mean |activation| x L1 norm of the o_proj/down_proj column",
                "distillation": False},
        target=job.target, params_before=job.params_before, seed=seed, prune_seconds=seconds,
        steps=steps, layer_sources=sources, n_layers_before=n, n_layers_after=len(sources),
    )
