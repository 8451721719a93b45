"""Whether a prune fits in memory, resident or layer by layer, decided before the model is loaded.

The figures are the method's declared formula (`laco.pruners.memory_need`) on the model's shape, read
from its config on the meta device, and its calibration batch, plus what this process already holds
(the interpreter and its libraries, measured). The bound is `--max-memory`, else what the machine can
give now (psutil's available memory plus this process's own). The model is pruned resident when the
resident figure fits, layer by layer when it does not (or when asked) and the method can stream; what
fits neither is refused in one line naming the figure and the bound. A streamed prune gives the rest
of the bound to its layer cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from laco import LacoError
from laco.memory import LAYER_CACHE, MB, ModelShape, all_layers, available_memory, format_size, rss_now

# The formulas aim within 25% of the measured peak: the layer cache leaves that much of the streamed
# figure free, so that the peak stays within the bound when a formula falls short.
MARGIN = 0.25
READING = "reading a tensor (its file pages)"  # mapped while one tensor is copied out (laco.stream.shards)


@dataclass
class MemoryPlan:
    bound: int
    bound_from: str
    runtime: int  # this process before loading
    resident: dict[str, int] | None
    streamed: dict[str, int] | None
    stream: bool
    shape: ModelShape | None = None
    cache_use: int = 0  # the most of the layer cache the method's passes can use (`laco.memory.LAYER_CACHE`)

    def total(self, parts: dict[str, int] | None) -> int | None:
        return None if parts is None else self.runtime + sum(parts.values())

    @property
    def cache(self) -> int:
        """What a streamed prune may keep of the layers it has read: what the bound leaves beside the
        streamed figure and its margin, at most what the method can use."""
        if not self.stream or self.streamed is None:
            return 0
        room = self.bound - self.runtime - (1 + MARGIN) * sum(self.streamed.values())
        return int(max(0, min(room, self.cache_use)))

    def estimate(self) -> int | None:
        """The chosen way's peak: the interpreter, the formula, and a streamed prune's cache when full."""
        return self.total(self.streamed) + self.cache if self.stream else self.total(self.resident)

    def as_dict(self) -> dict:
        """The plan as a record states it (MB)."""
        mb = lambda parts: None if parts is None else {k: v / MB for k, v in parts.items()}  # noqa: E731
        chosen = self.streamed if self.stream else self.resident
        estimate = self.estimate()
        return {"max_memory_mb": self.bound / MB, "max_memory_from": self.bound_from, "streamed": self.stream,
                "estimate_mb": None if estimate is None else estimate / MB,
                "runtime_mb": self.runtime / MB, "parts_mb": mb(chosen), "layer_cache_mb": self.cache / MB,
                "formula": "laco.pruners.memory_need + the interpreter's RSS measured before loading"
                           + (" + the layer cache (what the bound leaves beside 1.25 x the rest, at most what the method "
                              "can use)" if self.stream else "")}


def describe(parts: dict[str, int]) -> str:
    return ", ".join(f"{name} {format_size(size)}" for name, size in parts.items() if size)


def model_shape(spec: str, dtype: str, sentences: list[str], trust_remote_code: bool = False) -> ModelShape:
    """The shape of the model of `spec` in `dtype` with the calibration batch of `sentences`, from its
    config and tokenizer only (nothing is loaded; a synthetic model is built first)."""
    from transformers import AutoConfig, AutoTokenizer

    from laco.stream.model import local_folder

    _, folder = local_folder(spec)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    return config_shape(config, tokenizer, dtype, sentences, trust_remote_code)


def config_shape(config, tokenizer, dtype: str, sentences: list[str], trust_remote_code: bool = False) -> ModelShape:
    """The shape of a transformers config in `dtype` with the calibration batch `tokenizer` makes of `sentences`."""
    from laco.architectures import inspect_config
    from laco.calibration import tokenize
    from laco.memory import meta_model, shape_of
    from laco.stream.model import torch_dtype

    inspect_config(config, trust_remote_code=trust_remote_code)  # an unsupported layout fails as the loader says
    kind = torch_dtype(dtype, config)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenize(tokenizer, sentences)["input_ids"].shape
    shape = shape_of(meta_model(config, trust_remote_code=trust_remote_code, dtype=kind), kind.itemsize)
    return shape.calibrated(batch[0], batch[1])


def plan_memory(method: str, shape: ModelShape, params: dict, *, max_memory: int | None, stream: bool = False,
                spec: str = "the model", bound_from: str = "--max-memory") -> MemoryPlan | None:
    """Resident, streamed, or a one-line refusal (see the module docstring); None for a method that
    declares no formula (a plugin need not), which is neither planned nor refused unless asked to stream."""
    from laco.pruners import memory_need

    runtime = rss_now()
    bound, bound_from = (max_memory, bound_from) if max_memory else (available_memory() + runtime, "available memory")
    resident = memory_need(method, shape, streamed=False, **params)
    streamed = memory_need(method, shape, streamed=True, **params)
    if resident is None and streamed is None:
        if stream:
            raise LacoError(f"{method} declares no memory formula (peak_memory): it cannot prune layer by layer")
        return None
    cache_use = 0
    if streamed is not None:
        cache_use = streamed.pop(LAYER_CACHE, all_layers(shape))
        streamed[READING] = shape.largest_tensor_params * shape.dtype_bytes
    plan = MemoryPlan(bound, bound_from, runtime, resident, streamed, stream=False, shape=shape, cache_use=cache_use)
    if stream or resident is None or plan.total(resident) > bound:
        if streamed is None:
            raise LacoError(f"{method} cannot prune layer by layer and needs {format_size(plan.total(resident))} on "
                            f"{spec} ({describe(resident)}, the interpreter {format_size(runtime)}); the memory bound "
                            f"is {format_size(bound)} ({bound_from})")
        if plan.total(streamed) > bound:
            raise LacoError(f"a memory bound of {format_size(bound)} ({bound_from}) is below what {method} needs "
                            f"layer by layer on {spec}: {format_size(plan.total(streamed))} (one decoder layer is "
                            f"{format_size(shape.layer_bytes)}; {describe(streamed)}, the interpreter {format_size(runtime)})")
        plan.stream = True
    return plan


def plan_for_command(args, params: dict, sentences: list[str]) -> MemoryPlan | None:
    """The plan of a `laco prune` command, or None where it is not made: a GPU run (its memory is the
    GPU's), a model whose config is not local, a method with no formula; a model that does not load is left for the loader to
    report, unless --stream or --max-memory asked for the plan."""
    from laco.loading import resolve
    from laco.memory import parse_size

    asked = bool(args.stream or args.max_memory)
    bound = parse_size(args.max_memory) if args.max_memory else None
    if args.device != "cpu" or args.device_map:
        if args.stream:
            raise LacoError("layer-by-layer pruning runs on the CPU: give no --device or --device-map with --stream")
        return None
    if resolve(args.model).kind == "hub" and not asked:
        return None
    try:
        shape = model_shape(args.model, args.dtype, sentences, args.trust_remote_code)
    except (OSError, ValueError) as exc:
        if asked:
            raise LacoError(f"cannot read the shape of {args.model}: {str(exc).strip().splitlines()[0]}") from None
        return None
    targets = {"target_ratio": args.target_ratio, "target_layers": args.target_layers}
    return plan_memory(args.method, shape, {**params, **targets}, max_memory=bound, stream=args.stream, spec=args.model)
