"""The Layer Collapse search (Algorithm 1 of the LaCo paper).

Indexing. Layers are numbered from 0. The pointer l starts at H - C and walks down to L
inclusive; H is an exclusive upper bound (the number of layers the search may touch) and L the
lowest layer that may act as a merge base. With the paper's Llama2-7B setting (Table 8: C=4,
L=1, H=32 on a 32-layer model) the first candidate merges layers 29, 30, 31 into 28, and layer 0
is never merged. This matches the authors' notebook, whose pointer starts at HIGHEST_LAY -
MERGE_LAYERS over a 0-based layer list.

Each step merges K = min(C - 1, n_layers - l - 1) layers above l into l (`merge.MERGE_MODES`),
deletes them, and keeps the result when the mean cosine similarity between the last hidden
states of the candidate and of the ORIGINAL model exceeds T; then l -= I, else l -= 1.

Speed. Merges proceed top-down, so the layers below the pointer are always the original
layers, at their original indices. The `cached` engine therefore records, in one dense forward,
the hidden state entering every layer (and the keyword arguments each layer is called with:
masks, rotary embeddings, which differ between sliding and full attention layers), and runs only
the candidate's suffix l..end, each layer with the arguments of the original layer it came from. The `naive` engine does
what the notebook does: copy the whole model and run a full forward per candidate. Both share
the loop below, so they make the same decisions (tests/test_collapse.py checks it).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import torch
from torch import nn
from tqdm.auto import tqdm

from laco import LacoError
from laco.faults import kill_point
from laco.architectures import Architecture, check_layer
from laco.merge import MERGE_MODES, merge_layers
from laco.surgery import decoder, decoder_layers, final_norm, set_layers


THRESHOLD_ITERATIONS = 30  # bisection steps on T when the search is given a target (`find_threshold`)


@dataclass(frozen=True)
class CollapseConfig:
    C: int = 4  # layers per merge: the base and up to C - 1 layers above it
    L: int = 1  # lowest merge base (0-based, inclusive)
    H: int | None = None  # the pointer starts at H - C; None means the model's layer count
    I: int = 2  # pointer step after an accepted merge  # noqa: E741
    T: float = 0.65  # similarity threshold
    merge: str = "paper"

    def validate(self) -> CollapseConfig:
        """Check what can be checked without the model (the CLI does so before loading it)."""
        cfg = self
        if cfg.merge not in MERGE_MODES:
            raise LacoError(f"unknown merge mode {cfg.merge!r}; choose one of {', '.join(MERGE_MODES)}")
        if cfg.C < 2:
            raise LacoError(f"C must be at least 2 (the base layer and one to merge into it), got {cfg.C}")
        if not (0 < cfg.T <= 1) or math.isnan(cfg.T):
            raise LacoError(f"T must lie in (0, 1], got {cfg.T}")
        if cfg.I < 1:
            raise LacoError(f"I must be at least 1, got {cfg.I}")
        if cfg.L < 0:
            raise LacoError(f"L must be at least 0, got {cfg.L}")
        if cfg.H is not None and cfg.L > cfg.H:
            raise LacoError(f"L={cfg.L} must not exceed H={cfg.H}")
        return cfg

    def resolved(self, n_layers: int) -> CollapseConfig:
        """This config with H filled in, after checking every value against the model."""
        cfg = (self if self.H is not None else replace(self, H=n_layers)).validate()
        if cfg.H > n_layers:
            raise LacoError(f"H={cfg.H} is beyond the model's {n_layers} layers")
        if cfg.H - cfg.C < cfg.L:
            raise LacoError(f"the pointer would start at H - C = {cfg.H - cfg.C}, below L={cfg.L}: nothing to search")
        return cfg


# The paper's Table 8, with the layer count of each model (H equals it in every row).
PAPER_SETTINGS: dict[str, tuple[CollapseConfig, int]] = {
    "llama2-7b": (CollapseConfig(C=4, L=1, H=32, I=2, T=0.65), 32),
    "llama2-13b": (CollapseConfig(C=6, L=1, H=40, I=2, T=0.75), 40),
    "baichuan2-7b": (CollapseConfig(C=4, L=1, H=32, I=2, T=0.70), 32),
    # row 4 is labelled "Llama2-13B" a second time in the source text; read as Baichuan2-13B (H=40 is its
    # depth; rows 1-3 follow Table 1's order)
    "baichuan2-13b": (CollapseConfig(C=6, L=1, H=40, I=2, T=0.70), 40),
}


def paper_setting(name: str, n_layers: int | None = None) -> CollapseConfig:
    """A Table 8 setting; on a model of another depth H is scaled to cover the whole model."""
    try:
        cfg, paper_layers = PAPER_SETTINGS[name]
    except KeyError:
        raise LacoError(f"unknown paper setting {name!r}; choose one of {', '.join(PAPER_SETTINGS)}") from None
    if n_layers is None or cfg.H != paper_layers:
        return cfg
    return replace(cfg, H=n_layers)


def make_config(*, merge: str = "paper", paper_setting_name: str | None = None, n_layers: int | None = None,
                **hyper: int | float) -> CollapseConfig:
    """The defaults or a Table 8 row (H scaled to `n_layers`), then the given C, L, H, I, T."""
    unknown = set(hyper) - set("CLHIT")
    if unknown:
        raise LacoError(f"unknown LaCo hyper-parameters {sorted(unknown)}; known: C, L, H, I, T")
    base = paper_setting(paper_setting_name, n_layers) if paper_setting_name else CollapseConfig()
    return replace(base, merge=merge, **hyper)


@dataclass
class Step:
    pointer: int  # the merge base, as an index into the layer list at that moment
    k: int  # number of layers merged into it
    layers: list[int]  # original indices of the layers the candidate collapses into one
    similarity: float
    accepted: bool
    n_layers: int  # layer count after this step


@dataclass
class CollapseResult:
    config: CollapseConfig
    engine: str
    steps: list[Step]
    layer_sources: list[list[int]]  # output layer j holds what came from these original layers
    n_layers_before: int
    n_layers_after: int
    search_seconds: float  # the pruning step at the chosen T (dense trace + search), what the paper times
    threshold_search: dict | None = None  # target mode: the bisection on T, timed apart (its "seconds")
    sliced_config_keys: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def sentence_similarities(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Cosine similarity per sentence of the flattened (tokens x hidden) last hidden states,
    padding excluded: the paper's Avg_Cos_Sim before averaging."""
    m = mask.unsqueeze(-1).to(torch.float32)
    a, b = a.float() * m, b.float() * m
    dot = (a * b).sum(dim=(1, 2))
    norms = a.pow(2).sum(dim=(1, 2)).sqrt() * b.pow(2).sum(dim=(1, 2)).sqrt()
    return dot / norms.clamp_min(1e-12)


def mean_similarity(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return sentence_similarities(a, b, mask).mean().item()


@torch.no_grad()
def last_hidden(model: nn.Module, batch: dict) -> torch.Tensor:
    """Last hidden states after the final norm."""
    return decoder(model)(**batch, use_cache=False).last_hidden_state


class DenseTrace:
    """One forward of the dense model: the hidden state entering every layer, the keyword
    arguments each layer is called with (masks and rotary embeddings of its attention type),
    and the final output."""

    @torch.no_grad()
    def __init__(self, model: nn.Module, batch: dict):
        self.inputs: list[torch.Tensor] = []
        self.layer_kwargs: list[dict] = []

        def record(module, args, kwargs):
            self.inputs.append(args[0] if args else kwargs["hidden_states"])
            self.layer_kwargs.append({k: v for k, v in kwargs.items() if k != "hidden_states"})

        handles = [layer.register_forward_pre_hook(record, with_kwargs=True) for layer in decoder_layers(model)]
        try:
            self.output = last_hidden(model, batch)
        finally:
            for h in handles:
                h.remove()
        self.norm = final_norm(model)
        self.mask = batch["attention_mask"]

    @torch.no_grad()
    def run_suffix(self, layers: Sequence[nn.Module], origins: Sequence[int] | int) -> torch.Tensor:
        """Last hidden states of a model whose layers from `origins[0]` on are `layers`; layer j is
        called as the original layer `origins[j]` was (its merge base, for a merged layer). An int
        is the start of original layers in order."""
        if isinstance(origins, int):
            origins = range(origins, origins + len(layers))
        h = self.inputs[origins[0]]
        for layer, origin in zip(layers, origins, strict=True):
            h = layer(h, **self.layer_kwargs[origin])
            if isinstance(h, tuple):  # older transformers return (hidden, ...)
                h = h[0]
        return self.norm(h)


class _CachedEngine:
    """Candidates as layer lists; only the suffix from the pointer is run.

    `via` (a `LoadedModel`) gives the layers' weights for a merge (`materialise`) and takes a merged
    layer into the model (`adopt`); a streamed model (`laco.stream`) keeps its layers on disk that way."""

    name = "cached"

    def __init__(self, trace: DenseTrace, layers: Sequence[nn.Module], arch: Architecture, merge: str, via=None):
        self.trace, self.arch, self.mode = trace, arch, merge
        self.layers = list(layers)
        self.origins = list(range(len(self.layers)))  # original index of each current layer
        self._candidate: tuple[int, int, nn.Module] | None = None
        self.via = via

    def _merged(self, base: int, k: int) -> nn.Module:
        return merge_layers(self.mode, self.arch, self.layers, base, k, self.via)

    def similarity(self, base: int, k: int) -> float:
        self._candidate = None  # the previous candidate is not kept while this one is built
        merged = self._merged(base, k)
        self._candidate = (base, k, merged)
        origins = [self.origins[base], *self.origins[base + k + 1 :]]
        out = self.trace.run_suffix([merged, *self.layers[base + k + 1 :]], origins)
        return mean_similarity(out, self.trace.output, self.trace.mask)

    def accept(self, base: int, k: int) -> None:
        if self._candidate is not None and self._candidate[:2] == (base, k):
            merged = self._candidate[2]
        else:  # the similarity came from the memo of a threshold search
            merged = self._merged(base, k)
        if self.via is not None:
            merged = self.via.adopt(merged, self.origins[base], replaces=self.layers[base : base + k + 1])
        self.layers[base : base + k + 1] = [merged]
        self.origins[base : base + k + 1] = [self.origins[base]]
        self._candidate = None


class _NaiveEngine:
    """What the authors' notebook does: a full copy and a full forward per candidate."""

    name = "naive"

    def __init__(self, model: nn.Module, trace: DenseTrace, batch: dict, arch: Architecture, merge: str):
        self.current, self.batch, self.target = copy.deepcopy(model), batch, trace
        self.arch, self.merge = arch, MERGE_MODES[merge]
        self._candidate: nn.Module | None = None

    @property
    def layers(self) -> list[nn.Module]:
        return list(decoder_layers(self.current))

    def similarity(self, base: int, k: int) -> float:
        candidate = copy.deepcopy(self.current)
        layers = list(decoder_layers(candidate))
        merged = self.merge(self.arch, layers, base, k)
        keep = [*range(base), base, *range(base + k + 1, len(layers))]
        set_layers(candidate, [merged if i == base else layers[i] for i in keep], keep)
        self._candidate = candidate
        return mean_similarity(last_hidden(candidate, self.batch), self.target.output, self.target.mask)

    def accept(self, base: int, k: int) -> None:
        self.current, self._candidate = self._candidate, None


def _search(engine, cfg: CollapseConfig, n_layers: int, memo: dict | None, progress: bool):
    """The loop of Algorithm 1; returns (steps, layer_sources)."""
    sources = [[i] for i in range(n_layers)]
    steps: list[Step] = []
    pointer = cfg.H - cfg.C
    bar = tqdm(total=pointer - cfg.L + 1, desc=f"LaCo {cfg.merge} T={cfg.T:.3f}", disable=not progress, leave=False)
    while pointer >= cfg.L:
        kill_point("collapse:step")
        k = min(cfg.C - 1, len(sources) - pointer - 1)
        key = (tuple(map(tuple, sources)), pointer)
        if memo is not None and key in memo:
            sim = memo[key]
        else:
            sim = engine.similarity(pointer, k)
            if memo is not None:
                memo[key] = sim
        accepted = sim > cfg.T
        collapsed = [i for s in sources[pointer : pointer + k + 1] for i in s]
        if accepted:
            engine.accept(pointer, k)
            sources[pointer : pointer + k + 1] = [collapsed]
        steps.append(Step(pointer, k, collapsed, sim, accepted, len(sources)))
        step = cfg.I if accepted else 1
        bar.update(min(step, pointer - cfg.L + 1))
        pointer -= step
    bar.close()
    return steps, sources


def collapse(
    model: nn.Module,
    batch: dict,
    arch: Architecture,
    config: CollapseConfig,
    *,
    engine: str = "cached",
    target_layers: int | None = None,
    progress: bool = True,
    via=None,
) -> CollapseResult:
    """Run the search on `model` (changed in place) with the calibration `batch`.

    With `target_layers`, T is not taken from `config` but searched (see `find_threshold`). `via`: the
    `LoadedModel` that gives and takes the layers' weights (`_CachedEngine`).
    """
    layers = decoder_layers(model)
    n_before = len(layers)
    for layer in layers:
        check_layer(arch, layer)
    cfg = config.resolved(n_before)
    start = time.perf_counter()
    trace = DenseTrace(model, batch)
    trace_seconds = time.perf_counter() - start
    threshold_search = None
    if target_layers is not None:
        began = time.perf_counter()
        threshold_search = find_threshold(trace, layers, arch, cfg, target_layers, progress=progress, via=via)
        threshold_search["seconds"] = time.perf_counter() - began
        cfg = replace(cfg, T=threshold_search["T"])
    start = time.perf_counter() - trace_seconds  # the bisection is not part of the pruning step
    if engine == "cached":
        runner = _CachedEngine(trace, layers, arch, cfg.merge, via)
    elif engine == "naive":
        runner = _NaiveEngine(model, trace, batch, arch, cfg.merge)
    else:
        raise LacoError(f"unknown search engine {engine!r}; choose cached or naive")
    steps, sources = _search(runner, cfg, n_before, None, progress)
    seconds = time.perf_counter() - start
    sliced = set_layers(model, runner.layers, [s[0] for s in sources])
    return CollapseResult(cfg, engine, steps, sources, n_before, len(sources), seconds, threshold_search, sliced)


def find_threshold(
    trace: DenseTrace,
    layers: Sequence[nn.Module],
    arch: Architecture,
    cfg: CollapseConfig,
    target_layers: int,
    *,
    iterations: int = THRESHOLD_ITERATIONS,
    progress: bool = True, via=None,
) -> dict:
    """The largest T whose search keeps at most `target_layers` layers, by bisection on T.

    The paper cannot set the pruning ratio (its stated limitation); this makes it a target (checked
    against the model by `laco.targets`). Similarities are memoised by (layer state, pointer), so
    searches that share a path of decisions share their forwards. Returns T and every (T, layers
    kept) tried.
    """
    n = len(layers)
    memo: dict = {}
    trials: list[dict] = []

    def kept(t: float) -> int:
        engine = _CachedEngine(trace, layers, arch, cfg.merge, via)
        _, sources = _search(engine, replace(cfg, T=t), n, memo, progress=False)
        trials.append({"T": t, "layers": len(sources)})
        return len(sources)

    lowest = 1e-9
    fewest = kept(lowest)
    if fewest > target_layers:
        raise LacoError(
            f"cannot reach {target_layers} layers with C={cfg.C} L={cfg.L} H={cfg.H} I={cfg.I}: "
            f"merging every candidate leaves {fewest}"
        )
    threshold = bisect_threshold(kept, target_layers, lowest, iterations, progress)
    achieved = kept(threshold)
    return {
        "method": "bisection on T: the largest T whose search keeps at most the target layer count",
        "target_layers": target_layers,
        "T": threshold,
        "achieved_layers": achieved,
        "trials": trials,
        "distinct_candidates": len(memo),
    }


def bisect_threshold(kept: Callable[[float], int], target_layers: int, lowest: float, iterations: int,
                     progress: bool) -> float:
    """The largest T in [lowest, 1] found with `kept(T) <= target_layers`, given that `lowest` meets it."""
    lo, hi = lowest, 1.0
    if kept(hi) <= target_layers:
        return hi
    for _ in tqdm(range(iterations), desc="threshold search", disable=not progress, leave=False):
        mid = (lo + hi) / 2
        if kept(mid) <= target_layers:
            lo = mid
        else:
            hi = mid
    return lo


def collapse_memory(shape, *, streamed: bool, C: int, merge: str, naive: bool = False) -> dict[str, int] | None:
    """Bytes the search holds at its peak beside the interpreter, by part (`laco.memory.ModelShape`).
    Streamed, a candidate holds the C layers it merges and the merged copy; the suffix then runs one
    layer at a time (the cache of `laco.stream` comes on top, within its budget). None: the naive
    engine copies whole models and cannot stream."""
    from laco.memory import LAYER_CACHE, all_layers

    merged = 0 if merge == "drop" else 1
    parts = {"calibration states": (shape.n_layers + 2) * shape.hidden_state_bytes,
             "one layer's forward": shape.layer_activation_bytes()}
    if merge == "paper":  # float32 copies of the base, the sum, a summand and a difference
        parts["merge scratch (float32)"] = 4 * 4 * shape.largest_tensor_params
    elif merge == "reference":
        parts["merge scratch"] = shape.largest_tensor_params * shape.dtype_bytes
    if streamed:
        if naive:
            return None
        parts["weights outside the layers"] = shape.non_layer_bytes
        parts["layers in memory"] = (C + 1 if merged else 1) * shape.layer_bytes
        parts[LAYER_CACHE] = all_layers(shape)  # every candidate runs the layers above it again
        return parts
    parts["weights"] = shape.weight_bytes
    parts["merged candidate"] = merged * shape.layer_bytes
    if naive:
        parts["naive engine: the current model and a candidate copy"] = 2 * shape.weight_bytes
    return parts
