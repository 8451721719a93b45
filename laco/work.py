"""What a prune computes, declared by each pruner beside its memory formula (`laco.pruners.work_need`).

The figures are in units the run's plan (`bench.plan`) times on the machine at hand, not in seconds:
- layer forwards: forwards of one decoder layer over the calibration batch; the plan times one on a
  one-layer copy of the model's architecture, so attention, norms and the per-call overhead of a small
  model are in it, which a FLOP count misses;
- FLOPs in the prune dtype that no layer forward holds (a head over every calibration token);
- float64 FLOPs (SliceGPT's second moments, eigendecompositions and rotations), at a float64 matmul rate;
- bytes of elementwise memory traffic (merging weights), at the probe's copy rate.

A search (LaCo, drop) cannot know its path before it runs: it declares the fewest and the most layer
forwards its walk can take, and between them the figure the plan times, a measured share of its
all-rejected walk (WALK_SHARE_FIXED_T, WALKS_FOR_A_TARGET).
"""

from __future__ import annotations

from dataclasses import dataclass

# torch.linalg.eigh of a d x d float64 matrix takes about as long as 14 d^3 FLOPs of float64 matmul:
# 12.8 s for d = 4096 on this project's CPU machines (2 threads), whose float64 matmul ran at 74.5 GFLOP/s
# the same minute (2026-12-03).
EIGH_FLOPS_PER_CUBE = 14

# A search's layer forwards, as shares of its all-rejected walk's (the most one walk runs), measured on
# the 36 cached searches of the runs behind the committed reports to 2026-12-03 (SmolLM2-135M: the
# smollm2-135m, laco-ratio-sweep, laco-ablations, post-training and tensor-parallel runs; the 7B shape:
# llama2-7b-shape), each from its record: its final walk's steps, and its threshold search's seconds at
# that run's seconds per layer forward. Each figure is the geometric centre of what was measured: at a
# fixed T a walk ran 0.19 (the 7B shape's random weights, which accept much) to 0.83 of its all-rejected
# walk (6 searches); searching T for a target, the bisection's memoised walks ran 1.4 to 5.8 all-rejected
# walks beside the all-accepted one (30 searches).
WALK_SHARE_FIXED_T = 0.39
WALKS_FOR_A_TARGET = 2.9


@dataclass(frozen=True)
class Work:
    layer_forwards: float  # a search: the figure the plan times, inside its range
    layer_forwards_range: tuple[float, float] | None = None  # a search's fewest and most; None: exact
    flops: float = 0.0  # in the prune dtype, outside the layer forwards
    float64_flops: float = 0.0
    memory_bytes: float = 0.0


def add(a: Work, b: Work) -> Work:
    """Two pieces of work run one after the other."""
    ranges = [w.layer_forwards_range or (w.layer_forwards, w.layer_forwards) for w in (a, b)]
    both = None if a.layer_forwards_range is None and b.layer_forwards_range is None else (
        ranges[0][0] + ranges[1][0], ranges[0][1] + ranges[1][1])
    return Work(a.layer_forwards + b.layer_forwards, both, a.flops + b.flops, a.float64_flops + b.float64_flops,
                a.memory_bytes + b.memory_bytes)


def dense_passes(n_layers: int, removed: int) -> float:
    """Layer forwards of one dense pass per layer removed, each over the model as it then is (CoMe's
    merges): n + (n - 1) + ... over `removed` passes."""
    return float(sum(n_layers - j for j in range(removed)))


def merge_traffic(shape, k: int, merge: str) -> float:
    """Bytes one merge of k layers into a base moves: the k + 1 layers read and the merged one written;
    the paper's merge works in float32 copies of the base, the sum, a summand and a difference."""
    if merge == "drop":
        return 0.0
    if merge == "paper":
        return (k + 2) * shape.layer_params * 4 * 4
    return (k + 2) * shape.layer_bytes


def layers_removed(shape, target_ratio: float | None, target_layers: int | None) -> int:
    """Whole layers a depth target removes: a layer count as given, a ratio as the layers whose parameters
    come closest to it (as `laco.targets.layers_for_ratio` counts them); none without a target."""
    if target_layers is not None:
        return shape.n_layers - target_layers
    total = shape.n_layers * shape.layer_params + shape.embedding_params + shape.head_params + shape.other_params
    return min(shape.n_layers - 1, round((target_ratio or 0) * total / shape.layer_params))


def walk(n_layers: int, cfg, accept: bool, whole: bool = False) -> tuple[int, list[int]]:
    """Layer forwards of a walk whose every candidate is accepted (the fewest) or rejected (the most),
    each candidate running its suffix from the pointer (`whole`: all its layers, as the naive engine
    does); and the k of each candidate."""
    n, pointer, forwards, merged = n_layers, cfg.H - cfg.C, 0, []
    while pointer >= cfg.L:
        k = min(cfg.C - 1, n - pointer - 1)
        forwards += n - k - (0 if whole else pointer)
        merged.append(k)
        if accept:
            n -= k
        pointer -= cfg.I if accept else 1
    return forwards, merged


def collapse_work(shape, cfg, *, target: bool, whole: bool = False) -> Work:
    """What LaCo's search runs at `cfg` (a `laco.collapse.CollapseConfig`): one dense pass recording every
    layer's input, then each candidate's suffix (`whole`: the naive engine's whole candidate) and merge.
    With a target, `find_threshold` walks at the lowest T (all accepted) and at T = 1 (all rejected), then
    its bisection walks, which share candidates (memoised: at most one all-rejected walk each), then the
    search at the T found."""
    from laco.collapse import THRESHOLD_ITERATIONS

    cfg = cfg.resolved(shape.n_layers)
    fewest, fewest_ks = walk(shape.n_layers, cfg, accept=True, whole=whole)
    most, most_ks = walk(shape.n_layers, cfg, accept=False, whole=whole)
    merges = sum(merge_traffic(shape, k, cfg.merge) for k in fewest_ks), sum(merge_traffic(shape, k, cfg.merge) for k in most_ks)
    if target:
        low, high, share = 2 * fewest + most, fewest + (2 + THRESHOLD_ITERATIONS) * most, fewest + WALKS_FOR_A_TARGET * most
        traffic = merges[0] + WALKS_FOR_A_TARGET * merges[1]
    else:
        low, high, share = fewest, most, max(fewest, WALK_SHARE_FIXED_T * most)
        traffic = max(merges[0], WALK_SHARE_FIXED_T * merges[1])
    n = shape.n_layers  # the dense pass that records every layer's input
    return Work(n + share, (n + low, n + high), memory_bytes=traffic)
