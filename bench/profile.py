"""Profiles: what a run measures, as TOML data (bench/profiles/<name>.toml or any .toml path).

A profile names the model, the pruning methods in the order they run, and the settings of each
measurement. It is parsed into the declared schema below (`laco.config`): everything left out takes
the defaults written here, and a typo, a missing key or a wrong type is one line naming the file and
the key, before anything is loaded or measured. The measurements read the typed `Profile`; run.json
stores it as a plain dict (`Profile.model_dump()`), which is what the suites read.
"""

from __future__ import annotations

import difflib
import re
from importlib import resources
from pathlib import Path
from typing import Literal, Union

from pydantic import Field, field_validator, model_validator

from laco import LacoError
from laco.config import Strict, read_toml, validate

MEASUREMENTS = ("pruning_time", "memory", "perplexity", "accuracy", "flops", "throughput_hf", "throughput_vllm")
Measurement = Literal["pruning_time", "memory", "perplexity", "accuracy", "flops", "throughput_hf", "throughput_vllm"]
LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ModelSettings(Strict):
    spec: str = Field(min_length=1)  # hub id, folder, .gguf file or an embedded name (laco.loading)
    revision: str | None = None  # hub commit or tag; recorded in the dense model's identity
    dtype: Literal["float32", "float16", "bfloat16", "auto"] = "float32"
    # bfloat16 on a CPU where it is not fast (bench.dtype): run float32 instead, refuse the run,
    # or keep bfloat16; each says so in one line (bench.dtype)
    bf16_fallback: Literal["float32", "refuse", "keep"] = "refuse"
    dtype_note: str | None = None  # written by the bench: why the run's dtype is not the profile's (run.json)
    # the dtype the pruning step (bench.pruned: LaCo's search, every baseline's pruning, the pruning-time
    # phase) loads the dense model in and prunes in, and its weights are saved in; every measurement then
    # loads them in `dtype`. "same": `dtype`. The CPU profiles prune in float32: a LaCo search run in
    # bfloat16 merges other layers than float32's (README, dtype)
    prune_dtype: Literal["same", "float32", "float16", "bfloat16"] = "same"
    device: str = "cpu"
    device_map: Union[str, dict, None] = None
    trust_remote_code: bool = False
    # a bound on what a prune holds, e.g. "8GB" (as `laco prune --max-memory`): a method whose resident
    # figure exceeds it prunes layer by layer from the model's files, one that cannot is refused (bench.streamed);
    # the measurements still load whole models. CPU only
    max_memory: str | None = None

    @field_validator("max_memory")
    @classmethod
    def _a_size(cls, value: str | None) -> str | None:
        from laco import LacoError
        from laco.memory import parse_size

        try:
            value is None or parse_size(value)
        except LacoError as exc:
            raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _streams_on_the_cpu(self):
        if self.max_memory is not None and (self.device != "cpu" or self.device_map is not None):
            raise ValueError("max_memory bounds a prune on the CPU (layer by layer from the model's files): "
                             "give no device or device_map with it")
        return self

    def pruning_dtype(self) -> str:
        """The dtype the pruning step runs in: `prune_dtype`, or the run's dtype for "same"."""
        return self.dtype if self.prune_dtype == "same" else self.prune_dtype


class CalibrationSettings(Strict):
    """Where the calibration texts come from (laco.calibration); None everywhere: laco's 10 sentences."""

    file: str | None = None  # one text per line, or JSONL with `field`
    field: str | None = None
    # wikitext-2 test documents of the data dir by index, [first, end) as in range(), or "unread": every
    # document after the last one the run's perplexity and lm-eval wikitext read. They must be
    # disjoint from what the run evaluates (the runner checks); one calibration text per paragraph
    wikitext_documents: Union[list[int], Literal["unread"], None] = None
    sample: int | None = Field(default=None, ge=1)  # a seeded random draw of this many texts of those documents
    unit: Literal["paragraph", "sentence"] = "paragraph"  # what one text is (LaCo's paper calibrates on sentences)
    seed: int = 0


class PaperRowRef(Strict):
    """The row of one of the paper's tables this model stands beside (suites/paper_figures.toml)."""

    table: int = Field(ge=1)
    setting: str = ""  # an ablation row's label, e.g. "C=2"
    method: str = ""  # or the method row, e.g. "drop"


class PostTrainSettings(Strict):
    """Training a method's pruned model further, right after pruning (laco.posttrain); the bench measures
    the trained model in place of the pruned one."""

    recipe: str  # laco.recipes: continue, lora, distill
    params: dict = Field(default_factory=dict)  # the recipe's hyper-parameters (lr, tokens, seq_len, ...)
    # wikitext-2 test documents of the data dir, [first, end) as in range(), or "unread": every document
    # the run's perplexity and lm-eval wikitext never read, minus the model's calibration documents
    documents: Union[list[int], Literal["unread"]] = "unread"
    # train a model of the pruned model's shape from random weights instead (laco.posttrain): the control
    # that shows what the pruned model's inherited parameters are worth (claim laco-inherits-parameters)
    random_init: bool = False


class MethodSettings(Strict):
    name: str
    label: str | None = None
    target: Union[float, str, None] = None  # a ratio in (0, 1), or "match:LABEL"
    params: dict = Field(default_factory=dict)
    settings_from: str | None = None
    point: str | None = None  # the ratio point this model belongs to in the report; default from target
    calibration: CalibrationSettings | None = None  # a method that needs more calibration text
    paper: PaperRowRef | None = None  # the paper's row this model reproduces (ablation profiles)
    measurements: list[Measurement] | None = None  # a subset of the profile's measurements for this model
    post_train: PostTrainSettings | None = None
    # prune the model of this earlier entry (pruned, maybe post-trained) instead of the dense model; the
    # target and the achieved share stay against the dense model
    source: str | None = None

    @property
    def matches(self) -> str | None:
        """The label of the entry whose achieved ratio this one prunes to ("match:LABEL"), else None."""
        return self.target.removeprefix("match:") if isinstance(self.target, str) else None


class TaskOptions(Strict):
    limit: int | None = Field(default=None, ge=1)
    num_fewshot: int = Field(default=0, ge=0)
    metric: Literal["acc", "acc_norm"] | None = None


class AccuracySettings(Strict):
    backend: Literal["hf", "hf-shared", "vllm"] = "hf"  # hf: lm-eval HFLM; hf-shared: one forward per context
    batch_size: int = Field(default=8, ge=1)
    max_length: int | None = Field(default=None, ge=16)
    bootstrap_iters: int = Field(default=0, ge=0)  # lm-eval's own stderr bootstrap; the suites bootstrap items
    tasks: dict[str, TaskOptions] = Field(default_factory=dict)


class PerplexitySettings(Strict):
    window: int = Field(default=512, ge=2)  # the paper's protocol: non-overlapping windows of this many tokens
    n_windows: int | None = Field(default=None, ge=1)  # None: every window of wikitext-2 test
    batch_size: int = Field(default=4, ge=1)
    lm_eval_wikitext: bool = True  # also lm-eval's `wikitext` task (word perplexity)
    lm_eval_limit: int | None = Field(default=None, ge=1)  # documents of the lm-eval task (62 in all)
    lm_eval_max_length: int | None = Field(default=None, ge=16)


class MemorySettings(Strict):
    prompt_len: int = Field(default=128, ge=1)
    new_tokens: int = Field(default=32, ge=1)
    batch_size: int = Field(default=1, ge=1)
    timeout_s: float = Field(default=600, gt=0)


class ThroughputSettings(Strict):
    batch_size: int = Field(default=8, ge=1)
    input_len: int = Field(default=128, ge=1)
    output_len: int = Field(default=128, ge=2)  # >= 2: decode is timed apart from the first token
    warmup: int = Field(default=1, ge=0)
    rounds: int = Field(default=5, ge=2)  # interleaved over all models of the run
    resident: Union[bool, Literal["auto"]] = "auto"  # HF: keep every model loaded, or reload per round


class PruningTimeSettings(Strict):
    repeats: int = Field(default=3, ge=1)  # timings of the pruning step per method (the first is the run's own)


class VllmSettings(Strict):
    python: str | None = None  # interpreter of the vLLM environment; env LACO_VLLM_PYTHON wins
    tensor_parallel_size: int = Field(default=1, ge=1)
    max_model_len: int | None = None
    gpu_memory_utilization: float = Field(default=0.9, gt=0, le=1)  # on CPU: the share of memory vLLM may take
    cpu_kvcache_gib: float = Field(default=1, gt=0)  # CPU only: VLLM_CPU_KVCACHE_SPACE
    enforce_eager: bool = False  # True skips torch.compile (start-up minutes on CPU)
    timeout_s: float = Field(default=1800, gt=0)
    # labels timed on vLLM ("dense" included), None: every model. Each model of the phase keeps an engine
    # alive for the whole phase, which costs memory (on CPU about 1.5 GB each)
    models: list[str] | None = None


class RunSettings(Strict):
    # "while-measured": a pruned model's weights folder is removed once no later step of the run reads it;
    # its record (with the weights digest) and results stay, and a resume reuses them (bench.weights_kept)
    keep_pruned_weights: Literal["always", "while-measured"] = "always"


class Acceptance(Strict):
    """A release criterion of this profile, judged by the suites like a claim against the dense model."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    statement: str
    subject: str = "laco"  # a role of the claims file, or a method label of this profile
    metric: Literal["perplexity.ppl", "accuracy.average", "memory.param_mb", "memory.peak_mb"]
    comparison: Literal["<", "<=", ">", ">="]
    threshold: float = Field(gt=0)  # subject <comparison> threshold x dense
    gate: bool = True


class Profile(Strict):
    description: str = ""
    seed: int = 0
    model: ModelSettings
    calibration: CalibrationSettings = Field(default_factory=CalibrationSettings)
    methods: list[MethodSettings] = Field(default_factory=list)
    measurements: list[Measurement] = Field(default_factory=lambda: list(MEASUREMENTS))
    accuracy: AccuracySettings = Field(default_factory=AccuracySettings)
    tasks: dict[str, dict] = Field(default_factory=dict)  # extra benchmarks as data (bench.tasks)
    perplexity: PerplexitySettings = Field(default_factory=PerplexitySettings)
    memory: MemorySettings = Field(default_factory=MemorySettings)
    throughput: ThroughputSettings = Field(default_factory=ThroughputSettings)
    pruning_time: PruningTimeSettings = Field(default_factory=PruningTimeSettings)
    vllm: VllmSettings = Field(default_factory=VllmSettings)
    run: RunSettings = Field(default_factory=RunSettings)
    acceptance: list[Acceptance] = Field(default_factory=list)

    @field_validator("measurements")
    @classmethod
    def _no_repeats(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a measurement is listed twice")
        return value

    @model_validator(mode="after")
    def _methods(self) -> Profile:
        from laco.pruners import registry

        labels: list[str] = []
        registered = registry()  # the shipped methods and the plugins'
        for i, method in enumerate(self.methods):
            where = f"methods[{i}]"
            if method.name not in registered:
                close = difflib.get_close_matches(method.name, registered, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"{where}.name: pruning method {method.name!r} is not registered{hint}; "
                                 f"registered: {', '.join(registered)}")
            method.label = method.label or method.name
            if not LABEL.match(method.label) or method.label == "dense":
                raise ValueError(f"{where}.label: {method.label!r} must be a file-name-safe word other than 'dense'")
            if method.label in labels:
                raise ValueError(f"{where}.label: {method.label!r} is used twice; give each method entry its own label")
            _check_target(method, labels, where)
            if method.settings_from is not None:
                take_laco_settings(method, self.methods[:i], where)
            _check_source(method, labels, where)
            if method.post_train is not None:
                _check_post_train(method.post_train, f"{where}.post_train")
            labels.append(method.label)
        return self


def _check_target(method: MethodSettings, labels: list[str], where: str) -> None:
    target = method.target
    if isinstance(target, str):
        if not target.startswith("match:") or target.removeprefix("match:") not in labels:
            raise ValueError(f"{where}.target: {target!r} must be 'match:LABEL' of an earlier method ({labels})")
    elif target is not None and not 0 < target < 1:
        raise ValueError(f"{where}.target: a ratio must lie in (0, 1), got {target!r}")
    if target is not None and {"target_ratio", "target_layers"} & set(method.params):
        raise ValueError(f"{where}: give the target either as 'target' or in params, not both")


def _check_source(method: MethodSettings, labels: list[str], where: str) -> None:
    if method.source is not None and method.source not in labels:
        raise ValueError(f"{where}.source: {method.source!r} must be the label of an earlier method entry "
                         f"(earlier: {', '.join(labels) or 'none'})")


def _check_post_train(post: PostTrainSettings, where: str) -> None:
    """The recipe and its parameters as `laco post-train` checks them; the documents a range."""
    from laco.recipes import recipe_settings

    try:
        recipe_settings(post.recipe, post.params)
    except LacoError as exc:
        raise ValueError(f"{where}: {exc}") from None
    documents = post.documents
    if documents != "unread" and (len(documents) != 2 or not 0 <= documents[0] < documents[1]):
        raise ValueError(f"{where}.documents: must be [first, end) with 0 <= first < end, or \"unread\"; got {documents}")


def take_laco_settings(method: MethodSettings, earlier: list[MethodSettings], where: str) -> None:
    """`settings_from = "LABEL"`: an ablation takes the parameters it shares with that earlier LaCo
    method (laco.pruners.SHARED_WITH_LACO); its own params override them."""
    from laco.pruners import SHARED_WITH_LACO

    source = next((m for m in earlier if m.label == method.settings_from), None)
    if source is None or source.name != "laco":
        raise ValueError(f"{where}.settings_from: {method.settings_from!r} must be the label of an earlier laco method")
    if method.name not in SHARED_WITH_LACO:
        raise ValueError(f"{where}.settings_from: {method.name} takes no settings from LaCo "
                         f"(only {', '.join(SHARED_WITH_LACO)})")
    shared = {k: source.params[k] for k in SHARED_WITH_LACO[method.name] if k in source.params}
    method.params = {**shared, **method.params}


def profile_names() -> list[str]:
    folder = resources.files("bench").joinpath("profiles")
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))


def profile_path(name_or_path: str) -> tuple[str, Path]:
    """(name, file) of a shipped profile name or a .toml path."""
    if name_or_path.endswith(".toml"):
        path = Path(name_or_path)
        if not path.is_file():
            raise LacoError(f"profile file not found: {path}")
        return path.stem, path
    entry = resources.files("bench").joinpath("profiles", f"{name_or_path}.toml")
    if not entry.is_file():
        names = profile_names()
        close = difflib.get_close_matches(name_or_path, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise LacoError(f"unknown profile {name_or_path!r}{hint} (shipped: {', '.join(names)})")
    return name_or_path, Path(str(entry))


def load_profile(name_or_path: str) -> tuple[str, Profile]:
    """Read and resolve a profile by shipped name or by .toml path; returns (name, profile)."""
    name, path = profile_path(name_or_path)
    return name, parse_profile(read_toml(path, "profile"), path)


def parse_profile(raw: dict, where: str | Path = "profile") -> Profile:
    """The profile with every default filled in, each method's ratio point among them: what the bench reads."""
    profile = validate(raw, Profile, where)
    for method in profile.methods:
        method.point = method.point or default_point(method, profile.methods)
    return profile


def resolve_profile(raw: dict, where: str | Path = "profile") -> dict:
    """The resolved profile as the plain dict run.json stores (and the suites read)."""
    return parse_profile(raw, where).model_dump()


def default_point(method: MethodSettings, methods: list[MethodSettings]) -> str:
    """Models matched to another share its ratio point; others are a point of their own."""
    target = method.target
    if method.matches:
        other = next(m for m in methods if m.label == method.matches)
        return other.point or default_point(other, methods)
    if isinstance(target, float):
        return f"{target:.0%}"
    return method.label


# the measurements run in phases after every model is pruned (interleaved rounds over the models)
PHASED = ("pruning_time", "throughput_hf", "throughput_vllm")


def measurements_of(key: str, profile: Profile) -> list[str]:
    """The measurements a model takes: the profile's, or the subset its method entry names."""
    method = next((m for m in profile.methods if m.label == key), None)
    own = method.measurements if method else None
    return [n for n in profile.measurements if own is None or n in own]
