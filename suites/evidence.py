"""Reading a run directory written by `laco bench`: the one place that knows its layout and its evidence.

    runs/<ID>/run.json                          the profile, the run's provenance, the code history
    runs/<ID>/models/<key>.json                 one per model ("dense" or a method label)
    runs/<ID>/results/<key>/<measurement>.json  one per finished measurement

A result whose `model_fingerprint` differs from its model's fingerprint belongs to an older model under
the same key: it is treated as not measured, never reused. The evidence the statistics pair across
models is read here: per-item outcomes of every task (accuracy), per-window NLL (perplexity),
per-round timings (throughput) and repeated pruning timings; so is the config.json saved with a
model's weights. Two models are compared on items only when both were scored on the same documents;
otherwise the comparison is not measured, and says why. Everything here only reads; the figures are
computed in `suites.figures`, judged in `suites.verdicts`.

A measurement made of parts (perplexity: windows and lm-eval's word perplexity; accuracy: one part
per task) records each in `values.parts` ({part: {status, reason, ...}}) and stays "ok" while one
part succeeded: what needs only the kept parts is judged, what needs a failed one is not measured,
with that part's reason (an accuracy average needs every task of the profile).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from laco import LacoError

DENSE = "dense"
MEASUREMENTS = ("accuracy", "perplexity", "memory", "flops", "throughput_hf", "throughput_vllm", "pruning_time")


class NotMeasured(Exception):
    """A value the run does not have; its message says why."""


@dataclass
class Measurement:
    model: str
    name: str
    status: str  # "ok" | "n/a" | "failed"
    reason: str | None
    values: dict
    settings: dict
    provenance: dict
    code: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def seconds(self) -> float | None:
        return self.provenance.get("seconds")

    @property
    def failed_parts(self) -> dict[str, str]:
        """{part: reason} of the parts that failed (bench.parts); empty for a whole result."""
        return {name: p.get("reason") or "no reason given" for name, p in (self.values.get("parts") or {}).items()
                if p.get("status") != "ok"}


@dataclass
class Model:
    key: str
    method: str
    fingerprint: str
    record: dict
    saved: str | None
    weights: str | None = None  # digest of the saved weight files
    point: str | None = None  # the ratio point of the profile this model belongs to
    source: dict = field(default_factory=dict)  # what it was loaded or pruned from (laco.loading.ModelSource)
    pruned_stage: dict = field(default_factory=dict)  # a post-trained model: its pruned model (bench.posttrained)
    prune_settings_hash: str | None = None  # what decided its pruning (bench.pruned)

    @property
    def pruning_ratio(self) -> float | None:
        if self.key == DENSE:
            return 0.0
        return (self.record.get("parameters") or {}).get("pruning_ratio")

    @property
    def pruning_fingerprint(self) -> str:
        """The fingerprint of the model as its pruning left it (a post-trained model's pruned stage)."""
        return self.pruned_stage.get("fingerprint") or self.fingerprint

    @property
    def post_training(self) -> dict:
        """How the bench trained this model after pruning (laco.posttrain's record); {} when it did not."""
        return self.record.get("post_training") or {} if self.pruned_stage else {}

    @property
    def stage(self) -> str:
        """"post-trained", "random-init" (the same training from random weights of the same shape: a
        control), "re-pruned" (pruned from another entry's model) or "pruned" (dense: "pruned" too)."""
        if self.pruned_stage:
            return "random-init" if self.post_training.get("random_init") else "post-trained"
        return "re-pruned" if self.record.get("pruned_from") else "pruned"


@dataclass
class Run:
    path: Path
    meta: dict
    models: dict[str, Model]
    results: dict[str, dict[str, Measurement]]
    stale: list[str] = field(default_factory=list)  # "key/measurement" results of an older model

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def profile(self) -> dict:
        return self.meta.get("profile") or {}

    @property
    def synthetic(self) -> dict | None:
        """What the model is when it is a shaped stand-in with seeded random weights (laco.synthetic:
        "speed and memory only"), else None."""
        return next((m.source["synthetic"] for m in self.models.values() if m.source.get("synthetic")), None)

    @property
    def post_trained(self) -> bool:
        """Whether the bench trained any model of this run after pruning (then its post-training claims apply)."""
        return any(m.pruned_stage for m in self.models.values())

    @property
    def profile_name(self) -> str:
        return self.meta.get("profile_name") or self.profile.get("name") or "unknown"

    def measurement(self, key: str, name: str) -> Measurement | None:
        return self.results.get(key, {}).get(name)

    def ok(self, key: str, name: str) -> Measurement | None:
        """The measurement when it finished with status ok, else None."""
        m = self.measurement(key, name)
        return m if m is not None and m.ok else None

    def need(self, key: str, name: str) -> Measurement:
        m = self.ok(key, name)
        if m is None:
            raise NotMeasured(self.missing_reason(key, name))
        return m

    def missing_reason(self, key: str, name: str) -> str:
        """Why `name` of `key` has no usable value, in a few words."""
        if key not in self.models:
            return f"run has no model {key!r}"
        m = self.measurement(key, name)
        if m is None:
            return f"{key}: {name} stale (older model)" if f"{key}/{name}" in self.stale else f"{key}: no {name} result"
        return f"{key}: {name} {m.status} ({m.reason or 'no reason given'})"

    def keys_of(self, methods: list[str] | tuple[str, ...]) -> list[str]:
        """Model keys whose method (or label) is one of `methods`, in the run's order."""
        return [k for k, m in self.models.items() if m.method in methods or k in methods]

    def commits(self) -> list[str]:
        """The distinct code versions behind this run's results, oldest first."""
        seen = [(m.code or {}).get("source_digest") for ms in self.results.values() for m in ms.values()]
        history = [h.get("source_digest") for h in self.meta.get("code_history", [])]
        return list(dict.fromkeys(d for d in history + seen if d))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LacoError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
    except OSError as exc:
        raise LacoError(f"{path}: cannot read ({exc.strerror})") from None


def load_run(path: str | Path) -> Run:
    """Read a run directory; a missing run.json is bad input (LacoError)."""
    path = Path(path)
    if not (path / "run.json").is_file():
        raise LacoError(f"not a run directory (no run.json): {path}")
    meta = _read_json(path / "run.json")
    models: dict[str, Model] = {}
    for file in sorted((path / "models").glob("*.json")):
        d = _read_json(file)
        key = d.get("key") or file.stem
        record = d.get("record") or {}
        models[key] = Model(key, d.get("method", key), d.get("fingerprint", ""), record, d.get("saved"),
                            d.get("weights_sha256"), d.get("point"), d.get("source") or record.get("source") or {},
                            d.get("pruned") or {}, d.get("prune_settings_hash"))
    order = [m.get("label") for m in (meta.get("profile") or {}).get("methods", [])]
    models = dict(sorted(models.items(), key=lambda kv: _model_order(kv[1], order)))
    results: dict[str, dict[str, Measurement]] = {}
    stale: list[str] = []
    for file in sorted((path / "results").glob("*/*.json")):
        d = _read_json(file)
        key, name = d.get("model", file.parent.name), d.get("measurement", file.stem)
        model = models.get(key)
        if model is not None and model.fingerprint and d.get("model_fingerprint") not in (None, model.fingerprint):
            stale.append(f"{key}/{name}")
            continue
        results.setdefault(key, {})[name] = Measurement(
            key, name, d.get("status", "ok"), d.get("reason"), d.get("values") or {},
            d.get("settings") or {}, d.get("provenance") or {}, d.get("code") or {},
        )
    return Run(path, meta, models, results, stale)


def _model_order(model: Model, profile_order: list[str]) -> tuple[int, int, str]:
    """Dense first, then the profile's order of methods: a stable order for tables."""
    if model.key == DENSE:
        return (0, 0, "")
    rank = profile_order.index(model.key) if model.key in profile_order else len(profile_order)
    return (1, rank, model.key)


def saved_config(run: Run, key: str) -> tuple[Path, dict | None] | None:
    """The config.json saved with a model's weights (at the recorded path, or relative to the run):
    (its path, its content or None when it is not valid JSON); None when there is none."""
    saved = run.models[key].saved
    candidates = [Path(saved) / "config.json", run.path / saved / "config.json"] if saved else []
    config = next((c for c in candidates if c.is_file()), None)
    if config is None:
        return None
    try:
        return config, json.loads(config.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return config, None


# --- accuracy: per-item outcomes ---------------------------------------------------------------------

@dataclass(frozen=True)
class TaskItems:
    """One model's outcomes on one task, in document order."""

    task: str
    metric: str  # the score the bench uses for this task (acc or acc_norm)
    doc_id: tuple
    doc_hash: tuple
    correct: np.ndarray  # 1/0 by `metric`
    chance: np.ndarray  # 1 / number of choices, per item

    @property
    def n(self) -> int:
        return len(self.doc_id)

    @property
    def score(self) -> float:
        return float(self.correct.mean()) if self.n else float("nan")

    @property
    def chance_level(self) -> float:
        return float(self.chance.mean()) if self.n else float("nan")


def task_items(run: Run, key: str) -> dict[str, TaskItems]:
    """{task: TaskItems} of a model; NotMeasured when it has no accuracy result with per-item evidence."""
    m = run.need(key, "accuracy")
    items = m.values.get("items")
    if not items:
        raise NotMeasured(f"{key}: the accuracy result keeps no per-item outcomes (measured by older code)")
    out = {}
    for task, summary in m.values.get("tasks", {}).items():
        d = items.get(task)
        if not d:
            continue
        metric = summary.get("metric") or "acc"
        if metric not in d:
            raise NotMeasured(f"{key}: {task} has no per-item {metric}")
        chance = [1 / c if c else np.nan for c in d.get("n_choices") or [0] * len(d["doc_id"])]
        out[task] = TaskItems(task, metric, tuple(d["doc_id"]), tuple(d.get("doc_hash") or d["doc_id"]),
                              np.asarray(d[metric], dtype=float), np.asarray(chance, dtype=float))
    if not out:
        raise NotMeasured(f"{key}: no task with per-item outcomes")
    return out


def paired_items(run: Run, keys: list[str], tasks: list[str] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """{task: {key: outcomes, ..., "chance": per-item chance}} over the tasks every model has, checking
    that every model was scored on the same documents of each task (same ids, same document hashes).
    Over all tasks (`tasks` None) every model must have every task it asked for: an average over the
    tasks that happened not to fail would be another figure."""
    for k in keys:
        failed = {t: why for t, why in run.need(k, "accuracy").failed_parts.items() if tasks is None or t in tasks}
        if failed:
            raise NotMeasured(f"{k}: accuracy of {', '.join(f'{t} failed ({why})' for t, why in failed.items())}")
    per_model = {k: task_items(run, k) for k in keys}
    common = [t for t in next(iter(per_model.values())) if all(t in items for items in per_model.values())]
    if tasks is not None:
        common = [t for t in common if t in tasks]
    if not common:
        raise NotMeasured(f"{' and '.join(keys)} share no task with per-item outcomes")
    out = {}
    for task in common:
        first = per_model[keys[0]][task]
        for k in keys[1:]:
            other = per_model[k][task]
            if other.doc_id != first.doc_id or other.doc_hash != first.doc_hash:
                raise NotMeasured(items_disagree(task, keys[0], first, k, other))
        out[task] = {k: per_model[k][task].correct for k in keys} | {"chance": first.chance}
    return out


def items_disagree(task: str, a: str, items_a: TaskItems, b: str, items_b: TaskItems) -> str:
    ids_a, ids_b = set(zip(items_a.doc_id, items_a.doc_hash)), set(zip(items_b.doc_id, items_b.doc_hash))
    return (f"{a} and {b} were scored on different items of {task} ({items_a.n} vs {items_b.n} items, "
            f"{len(ids_a - ids_b)} only in {a}, {len(ids_b - ids_a)} only in {b}): not compared")


def item_check(run: Run) -> list[str]:
    """Every task where some model's items differ from the dense model's: the run's evidence problem list."""
    problems = []
    try:
        dense = task_items(run, DENSE)
    except NotMeasured:
        return problems
    for key in run.models:
        if key == DENSE:
            continue
        try:
            items = task_items(run, key)
        except NotMeasured:
            continue
        for task, d in dense.items():
            if task in items and (items[task].doc_id != d.doc_id or items[task].doc_hash != d.doc_hash):
                problems.append(items_disagree(task, DENSE, d, key, items[task]))
    return problems


def available_items(run: Run, key: str = DENSE) -> dict[str, int | None]:
    """How many items each task's data set has (the most a profile could evaluate): `n_available` of the
    accuracy result (lm-eval's n-samples "original"); for a run measured before it was recorded, the lines
    of the local file the run's generated task folder points at (its test split, else its validation
    split); None where neither is known."""
    tasks = run.need(key, "accuracy").values.get("tasks", {})
    return {task: summary.get("n_available") or _data_file_lines(run, task) for task, summary in tasks.items()}


def _data_file_lines(run: Run, task: str) -> int | None:
    config = run.path / "lm_eval_tasks" / f"{task}.yaml"
    if not config.is_file():
        return None
    splits = dict(re.findall(r"^\s+(test|validation):\s*(\S+)\s*$", config.read_text(encoding="utf-8"), re.M))
    data = Path(splits.get("test") or splits.get("validation") or "")
    if not data.name or not data.is_file():
        return None
    with data.open("rb") as lines:
        return sum(1 for line in lines if line.strip())


# --- perplexity: per-window NLL ----------------------------------------------------------------------

def windows(run: Run, key: str) -> dict:
    """The windowed perplexity result of a model; NotMeasured without per-window NLL."""
    m = run.need(key, "perplexity")
    if "windows" in m.failed_parts:
        raise NotMeasured(f"{key}: perplexity windows failed ({m.failed_parts['windows']})")
    w = m.values.get("windows") or {}
    if not w.get("nll"):
        raise NotMeasured(f"{key}: the perplexity result keeps no per-window NLL (measured by older code)")
    return w


def paired_windows(run: Run, a: str, b: str) -> tuple[list[float], list[float], int]:
    wa, wb = windows(run, a), windows(run, b)
    same = (wa.get("window"), wa.get("n_windows"), wa.get("dataset")) == (wb.get("window"), wb.get("n_windows"),
                                                                          wb.get("dataset"))
    if not same:
        raise NotMeasured(f"{a} and {b} read different perplexity windows: not compared")
    return wa["nll"], wb["nll"], int(wa["tokens_per_window"])


# --- throughput: interleaved rounds -----------------------------------------------------------------

THROUGHPUT_RATES = ("output_tokens_per_s", "decode_tokens_per_s", "prefill_tokens_per_s", "total_tokens_per_s")


def rounds(run: Run, key: str, engine: str) -> dict:
    """A model's interleaved-rounds throughput result on an engine."""
    m = run.need(key, f"throughput_{engine}")
    if not m.values.get("per_round"):
        raise NotMeasured(f"{key}: throughput_{engine} has no interleaved rounds (measured by older code)")
    return m.values


def paired_rounds(run: Run, a: str, b: str, engine: str, rate: str) -> tuple[list[float], list[float]]:
    """Per-round rates of a and b from the same interleaved phase (round i of each side by side)."""
    ra, rb = rounds(run, a, engine), rounds(run, b, engine)
    if ra.get("phase") != rb.get("phase"):
        raise NotMeasured(f"{a} and {b} were not timed in the same interleaved phase on {engine}: not compared")
    xa, xb = ra["per_round"][rate], rb["per_round"][rate]
    if len(xa) != len(xb):
        raise NotMeasured(f"{a} and {b} have different numbers of rounds on {engine}")
    return xa, xb


def flops(run: Run, key: str) -> dict:
    """A model's parameters and FLOPs of the throughput workload (bench.flops), the figures the
    compute-bound ideal is made of: {parameters, decode_flops_per_token, prefill_flops, workload_flops}."""
    v = run.need(key, "flops").values
    decode = v.get("decode") or {}
    return {"parameters": (v.get("parameters") or {}).get("total"), "layers": (v.get("parameters") or {}).get("layers"),
            "non_embedding": (v.get("parameters") or {}).get("non_embedding"),
            "decode_flops_per_token": decode.get("flops_per_token_mean"),
            "prefill_flops": (v.get("prefill") or {}).get("flops"), "workload_flops": v.get("workload_flops"),
            "workload": v.get("workload")}


def speedup_bounds(run: Run, subject: str, other: str, rate: str) -> tuple[float | None, float | None]:
    """(ideal, bound) of subject/other throughput for the same workload.

    ideal: the compute-bound ceiling, other's FLOPs over the subject's (decode per token for
    output/decode rates, the whole workload for total rates).
    bound: the ceiling the plausibility check uses. A step's time is per-layer overhead (kernel
    launches, scheduling: it scales with the layer count) plus FLOP-proportional work, so a ratio of
    two such times lies between the layer ratio and the FLOP ratio: at most their maximum. On a small
    model the overhead dominates, and depth pruning can then beat width pruning at equal FLOPs.
    (None, None) when FLOPs were not counted."""
    try:
        fs, fo = flops(run, subject), flops(run, other)
    except NotMeasured:
        return None, None
    key = "workload_flops" if rate == "total_tokens_per_s" else "decode_flops_per_token"
    if not fs.get(key) or not fo.get(key):
        return None, None
    ideal = float(fo[key]) / float(fs[key])
    layers = float(fo["layers"]) / float(fs["layers"]) if fs.get("layers") and fo.get("layers") else ideal
    return ideal, max(ideal, layers)


# --- pruning time: repeated timings of the pruning step ----------------------------------------------

def pruning_seconds(run: Run, key: str) -> list[float]:
    values = run.need(key, "pruning_time").values
    return [float(x) for x in values.get("repeats") or [values["seconds"]]]


def paired_pruning_seconds(run: Run, a: str, b: str) -> tuple[list[float], list[float], bool]:
    """Timings of a and b, and whether they were taken in the same interleaved rounds (then paired)."""
    ma, mb = run.need(a, "pruning_time"), run.need(b, "pruning_time")
    xa, xb = pruning_seconds(run, a), pruning_seconds(run, b)
    same_phase = ma.values.get("phase") is not None and ma.values.get("phase") == mb.values.get("phase")
    return xa, xb, same_phase and len(xa) == len(xb)

