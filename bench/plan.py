"""The plan of a run, made before anything loads: per model and step, the peak memory, the disk written,
the FLOPs and the time they take at this machine's measured rates; and the refusal of a run whose
pruned copies cannot fit on the run folder's disk.

Every figure comes from what the project already computes, on the model's config alone (a model not on
this machine whose shape laco/data/synthetic_models.toml writes down: that entry's config, and the
tokenizer its synthetic stand-in is built with for the calibration batch):
- peak memory of a measurement: its estimate (`bench.budget`), the dense model's for every model (a
  pruned model holds less); of a prune: the method's declared formula (`laco.pruners.memory_need`) on
  the model's shape and calibration batch (`laco.stream.plan.model_shape`), resident, as the bench
  prunes; the interpreter comes on top of both;
- disk written: a pruned copy's weights, the dense weights in the prune dtype times the parameters a
  ratio target keeps (the pruned count is known only after pruning; without a ratio: the dense size);
- FLOPs: torch's count on the meta device (`bench.flops.count_flops`) of each measurement's workload,
  a pruned model's scaled by the parameters it keeps; a prune's: the work its method declares
  (`laco.pruners.work_need`), its layer forwards at a layer's share of the calibration forward's count;
- time: a measurement's FLOPs / the matmul rate of the machine probe (`bench.probe`); a prune's work
  piece by piece (`Sizing.work_seconds`: a layer forward timed on a one-layer copy of the model), and
  its weights / the disk's write rate (`bench.disk`); a search: its range, and a measured share of it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bench.plan_prune import NOT_READ, PruneSizing, Step, first_line, matmul_rate, probe_device
from bench.weights_kept import WHILE_MEASURED, alive_at_each_step
from laco.memory import format_size

PROBE_BUDGET_S = 0.1  # per probe workload: the plan prints in about a second
ITEM_TOKENS = 512  # assumed per accuracy item without a local data file to read
# An item's tokens, estimated from its line in the local data file (its context and every choice, each
# fed once by the shared-context path) at about 4 characters a token, as English BPE text runs; on the
# CPU default's four tasks this put the dense accuracy at 256 s against 151 s measured (2026-12-02).
CHARS_PER_TOKEN = 4
GENERATING = ("memory", "throughput_hf", "throughput_vllm")  # measurements that prefill, then decode
NO_FOLDER = "no local folder yet: a GGUF or synthetic model is made by its first load, a hub model is downloaded by it"


@dataclass
class Plan:
    steps: list[Step]
    memory_bound: tuple[int, str] | None  # (bytes, what) the measurements' estimates are checked against
    disk_free: int
    disk_at: Path  # the run folder's nearest existing parent, whose filesystem takes the copies
    rates: dict  # the probe's figures and the disk's write rate (GB/s)
    notes: list[str] = field(default_factory=list)
    # per step of the run (bench.weights_kept), the pruned copies on disk during it; None: every copy to the end
    copies_on_disk: list[list[str]] | None = None
    build: tuple[int, Path] | None = None  # a synthetic model the run's first load writes: (bytes, its folder)

    @property
    def disk_needed(self) -> int:
        """The copies' bytes on disk at the run's fullest step: their sum when the run keeps every copy."""
        written = {s.model: s.disk for s in self.steps if s.step == "prune"}
        if self.copies_on_disk is None:
            return sum(written.values())
        return max((sum(written[label] for label in labels) for labels in self.copies_on_disk), default=0)

    def table(self) -> str:
        from tabulate import tabulate

        rows = [[s.model, s.step + (", layer by layer" if s.streamed else ""), size(s.memory),
                 size(s.disk) if s.disk else "-", count(s.flops), time_cell(s)] for s in self.steps]
        known = [s.memory for s in self.steps if s.memory is not None]
        disk = size(self.disk_needed) + (" (at once)" if self.copies_on_disk is not None else "")
        rows.append(["total", "all steps", size(max(known)) if known else NOT_READ + " (largest)", disk,
                     count(total(s.flops for s in self.steps)), duration(total(s.seconds for s in self.steps))])
        bound = f"{size(self.memory_bound[0])} ({self.memory_bound[1]})" if self.memory_bound else "not known here"
        lines = [tabulate(rows, headers=["model", "step", "peak memory", "disk written", "FLOPs", "est. time"]),
                 f"bounds: memory {bound}; disk {size(self.disk_free)} free at {self.disk_at}",
                 *(f"- {note}" for note in self.notes)]
        return "\n".join(lines)


def make_plan(profile, out: Path, data_dir: str | None) -> Plan:
    """The plan of `profile` run into `out`; nothing is written and no weights are loaded."""
    from bench.budget import memory_limit
    from bench.disk import disk_write_rate, existing_parent
    from bench.probe import float64_gflops, measure

    m = profile.model
    at = existing_parent(out)
    device = probe_device(m)
    rates = {**measure(device, PROBE_BUDGET_S), "fp64_gflops": float64_gflops(device, PROBE_BUDGET_S),
             "disk_gbps": disk_write_rate(at)}
    plan = Plan([], memory_limit(m.device, m.device_map), shutil.disk_usage(at).free, at, rates)
    model = Sizing(profile, data_dir, plan.notes, rates, at)
    plan.build = model.synthetic_build()
    if plan.build:
        plan.steps.append(model.build_step(plan.build[0]))
        plan.notes.append(f"build: the synthetic model is written once, by the run's first load, to {plan.build[1]} "
                          f"(its disk written is not a pruned copy's; its time: its parameters drawn at "
                          f"{rates.get('synthetic_mparams_per_s') or '?'} million a second, the bytes at the disk's write rate)")
    model.phase_weights = {name: model.weight_bytes * sum(kept for label, kept in kept_shares(profile)
                                                          if name in measured(label, profile))
                           for name in ("throughput_hf", "throughput_vllm")}
    plan.steps += [model.measurement("dense", name, 1.0) for name in measured("dense", profile)]
    for method in profile.methods:
        ratio = target_ratio(method, profile.methods)
        kept = 1.0 if ratio is None else 1 - ratio
        prune = model.prune(method, ratio, kept)
        plan.steps += [prune, *(model.measurement(method.label, name, kept, prune)
                                for name in measured(method.label, profile))]
    for step in plan.steps:
        if step.seconds is None:
            step.seconds = model.seconds(step)
    plan.notes += model.notes_of([s.model for s in plan.steps if s.streamed])
    if profile.run.keep_pruned_weights == WHILE_MEASURED:
        plan.copies_on_disk = alive_at_each_step(profile)
        plan.notes.append(copies_note(plan))
    return plan


def kept_shares(profile) -> list[tuple[str, float]]:
    """(label, share of the dense parameters it keeps, as planned) of the dense model and each method's."""
    ratios = [(m.label, target_ratio(m, profile.methods)) for m in profile.methods]
    return [("dense", 1.0), *((label, 1.0 if ratio is None else 1 - ratio) for label, ratio in ratios)]


def copies_note(plan: Plan) -> str:
    fullest = max(plan.copies_on_disk, key=lambda labels: sum(s.disk for s in plan.steps
                                                              if s.step == "prune" and s.model in labels), default=[])
    return (f'disk written, total: keep_pruned_weights = "{WHILE_MEASURED}" removes each pruned copy once no later '
            f"step reads it (bench.weights_kept): the most copies on disk at once, not their sum ({', '.join(fullest)})")


def measured(key: str, profile) -> list[str]:
    from bench.profile import measurements_of

    return [n for n in measurements_of(key, profile) if not (key == "dense" and n == "pruning_time")]


def target_ratio(method, methods) -> float | None:
    """The ratio a method prunes to: its own, or the one it matches (that method's target, as planned)."""
    target = method.target if method.target is not None else method.params.get("target_ratio")
    if method.matches:
        other = next(m for m in methods if m.label == method.matches)
        return target_ratio(other, methods)
    return target


class Sizing(PruneSizing):
    """The model's figures, read once from its config: measurement estimates, prune formulas, FLOPs."""

    def __init__(self, profile, data_dir: str | None, notes: list[str], rates: dict, disk_at: Path | None = None):
        from bench.model_files import prepared_folder
        from laco.synthetic import stand_in_for

        self.profile, self.data_dir, self.notes, self.rates, self.disk_at = profile, data_dir, notes, rates, disk_at
        self._layer_seconds: dict[tuple, float | None] = {}
        self.phase_weights: dict[str, float] = {}
        self.shape, self.meta, self.config, self.why_not, self.weight_bytes = None, None, None, "", 0
        self._prune_shapes: dict[int, object] = {}
        self._flops: dict[tuple, float] = {}
        m = profile.model
        try:
            self.folder = prepared_folder(m.spec, m.revision)
        except Exception as exc:  # noqa: BLE001  (a model the plan cannot size: the run's own checks say why)
            self.folder, self.why_not = None, first_line(exc)
        # not on this machine (a hub model, a synthetic one not built yet): the shape its entry of
        # laco/data/synthetic_models.toml writes down
        self.stand_in = None if self.folder else stand_in_for(m.spec)
        try:
            self.read_config()
        except Exception as exc:  # noqa: BLE001
            self.shape, self.meta, self.why_not = None, None, first_line(exc)
        if self.meta is None:
            why = self.why_not or NO_FOLDER
            self.notes.append(f"{NOT_READ}: the model's config is not read here ({why})")
        else:
            self.notes.append(self.weights_note())

    def read_config(self) -> None:
        """The model's shape and its meta-device skeleton: from its folder, or from its stand-in's entry."""
        import json

        from transformers import AutoConfig

        from bench.budget import shape_of
        from laco.memory import meta_model
        from laco.synthetic import known, transformers_config

        trust = self.profile.model.trust_remote_code
        if self.folder is not None:
            config = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
            self.config = AutoConfig.from_pretrained(self.folder, trust_remote_code=trust)
        elif self.stand_in is not None:
            config = dict(known()[self.stand_in].config)
            self.config = transformers_config(self.stand_in, "bfloat16")
        else:
            return
        self.shape = shape_of(config)
        self.meta = meta_model(self.config, trust_remote_code=trust)

    def synthetic_build(self) -> tuple[int, Path] | None:
        """(bytes, folder) of a synthetic model not built yet, in its own dtype; None for any other model."""
        from bench.budget import DTYPE_BYTES
        from laco.synthetic import PREFIX, folder_of, parse

        spec = self.profile.model.spec
        if self.folder is not None or self.meta is None or not spec.startswith(PREFIX):
            return None
        synthetic = parse(spec)
        return sum(p.numel() for p in self.meta.parameters()) * DTYPE_BYTES[synthetic.dtype], folder_of(synthetic)

    def build_step(self, nbytes: int) -> Step:
        """Drawing a synthetic model's parameters (`bench.probe.synthetic_parameters_per_second`) and writing them."""
        from bench.probe import synthetic_parameters_per_second
        from laco.synthetic import parse

        drawn = synthetic_parameters_per_second(parse(self.profile.model.spec).dtype)
        self.rates["synthetic_mparams_per_s"] = drawn and round(drawn / 1e6, 1)
        params = sum(p.numel() for p in self.meta.parameters())
        disk = self.rates.get("disk_gbps")
        return Step("dense", "build", None, nbytes, 0.0, params / drawn + nbytes / (disk * 1e9) if drawn and disk else None)

    def weights_note(self) -> str:
        """The dense weights: parameters x the bytes of the run's dtype; where the shape came from; where they go."""
        from bench.budget import DTYPE_BYTES
        from laco.synthetic import DATA_FILE, known

        m = self.profile.model
        params = sum(p.numel() for p in self.meta.parameters())
        nbytes = DTYPE_BYTES.get(m.dtype, 4)
        self.weight_bytes = params * nbytes
        note = f"weights: {params:,} parameters x {nbytes} B ({m.dtype}) = {format_size(params * nbytes)}"
        if self.stand_in is not None:
            note += (f"; the shape is laco/{DATA_FILE} [{self.stand_in}] ({known()[self.stand_in].model_id}'s config "
                     "written down), the model's files not being on this machine")
        if m.device_map:
            note += (f"; accelerate's device_map = {m.device_map!r} spreads them over the visible GPUs (a step's peak "
                     "memory: the sum over them)")
        return note

    def measurement(self, key: str, name: str, kept: float, prune: Step | None = None) -> Step:
        if name == "pruning_time":  # the method prunes the dense model again, `repeats` times (nothing saved)
            repeats, writing = self.profile.pruning_time.repeats, self.writing_seconds(prune)
            again = lambda t: None if t is None else repeats * (t - writing)  # noqa: E731
            return Step(key, name, prune.memory, 0, None if prune.flops is None else prune.flops * repeats,
                        again(prune.seconds), prune.seconds_range and tuple(map(again, prune.seconds_range)))
        flops = self.workload_flops(name)
        step = Step(key, name, self.measurement_memory(name), 0, None if flops is None else flops * kept)
        if name in GENERATING:
            step.seconds = self.generation_seconds(name, kept)
        return step

    def generation_seconds(self, name: str, kept: float) -> float | None:
        """A generating workload (memory, throughput): each round's prefill at the matmul rate, and each decode
        step at the slower of its FLOPs at that rate and the weights read once at the probe's memory rate
        (the roofline: decoding a small batch is bound by the weights' bytes, not by FLOPs)."""
        p, rates = self.profile, self.rates
        g, rounds = (p.memory, 1) if name == "memory" else (p.throughput, p.throughput.rounds + p.throughput.warmup)
        shape = (g.batch_size, g.prompt_len, g.new_tokens) if name == "memory" else (g.batch_size, g.input_len, g.output_len)
        rate, bandwidth = matmul_rate(rates, p.model.dtype), rates.get("memory_gbps")
        if self.count(*shape, "prefill") is None or not rate or not bandwidth:
            return None
        prefill, _, steps, per_token = self._flops[shape]
        decode = max(g.batch_size * per_token / (rate * 1e9), self.weight_bytes / (bandwidth * 1e9))
        loads = 1 if name == "memory" or self.phase_resident(name) else rounds
        load = self.load_seconds() * loads * kept * self.weight_bytes / 1e9
        return rounds * kept * (prefill / (rate * 1e9) + steps * decode) + load

    def phase_resident(self, name: str) -> bool:
        """Whether a throughput phase keeps its models loaded, as `bench.throughput.resident_policy` will decide
        from the parameters of every model it measures against the memory available now."""
        import psutil

        from bench.throughput import resident_policy

        return resident_policy([self.phase_weights.get(name, 0) / 1e6], psutil.virtual_memory().available / 1e6)["resident"]

    def load_seconds(self) -> float:
        """Seconds per GB of a model load (`bench.probe.load_seconds_per_gb`), measured once; 0 where it did not run."""
        from bench.probe import load_seconds_per_gb

        if "load_s_per_gb" not in self.rates:
            m = self.profile.model
            self.rates["load_s_per_gb"] = (load_seconds_per_gb(self.config, m.dtype, self.disk_at, trust_remote_code=
                                                               m.trust_remote_code) if self.disk_at and m.device == "cpu"
                                           and not m.device_map else None)
        return self.rates["load_s_per_gb"] or 0.0

    def measurement_memory(self, name: str) -> int | None:
        from bench.budget import DTYPE_BYTES, ESTIMATES

        if name == "flops":
            return 0  # the meta device holds no tensors
        if self.shape is None or name not in ESTIMATES:
            return None
        found = ESTIMATES[name](self.profile, self.shape, DTYPE_BYTES.get(self.profile.model.dtype, 4))
        return max((e.bytes for e in found), default=None)

    def workload_flops(self, name: str) -> float | None:
        """FLOPs of one model's measurement `name` (see the notes for what each counts)."""
        p = self.profile
        if name == "flops":
            return 0.0  # counted on the meta device, as here
        if name == "perplexity":
            w = p.perplexity
            return None if w.n_windows is None else self.count(1, w.window, 1, "prefill") * w.n_windows
        if name == "accuracy":
            items = [self.item_tokens(task, t.limit) for task, t in p.accuracy.tasks.items()]
            if not items or None in items:
                return None
            return sum(self.count(1, max(1, round(tokens)), 1, "prefill") * n for tokens, n in items)
        if name == "memory":
            g = p.memory
            return self.count(g.batch_size, g.prompt_len, g.new_tokens, "workload")
        t = p.throughput  # throughput_hf, throughput_vllm: every round and warm-up runs the workload
        once = self.count(t.batch_size, t.input_len, t.output_len, "workload")
        return None if once is None else once * (t.rounds + t.warmup)

    def item_tokens(self, task: str, limit: int | None) -> tuple[float, int] | None:
        """(tokens an item, items) of a task: from the first `limit` lines of its local data file (the split
        lm-eval scores: test, else validation), else ITEM_TOKENS; None without a limit or a readable file."""
        from bench.tasks import load_table

        entry = load_table(self.data_dir, self.profile.tasks).tasks.get(task)
        split = entry and (entry.files.get("test") or entry.files.get("validation"))
        if self.data_dir is None or not split:
            return None if limit is None else (ITEM_TOKENS, limit)
        try:
            with open(Path(self.data_dir) / split, "rb") as lines:
                sizes = [len(line) for line, _ in zip(lines, range(limit or 10**9)) if line.strip()]
        except OSError:
            return None if limit is None else (ITEM_TOKENS, limit)
        return (sum(sizes) / len(sizes) / CHARS_PER_TOKEN, len(sizes)) if sizes else None

    def count(self, batch: int, tokens: int, new: int, part: str) -> float | None:
        from bench.flops import count_flops

        if self.meta is None:
            return None
        if (batch, tokens, new) not in self._flops:
            counted = count_flops(self.meta, batch, tokens, new)
            decode = counted["decode"] or {"steps": 0, "flops_per_token_mean": 0.0}
            self._flops[(batch, tokens, new)] = (counted["prefill"]["flops"], counted["workload_flops"], decode["steps"],
                                                 decode["flops_per_token_mean"])
        prefill, workload, _, _ = self._flops[(batch, tokens, new)]
        return prefill if part == "prefill" else workload

    def seconds(self, step: Step) -> float | None:
        """A measurement's FLOPs at the probe's matmul rate in the run's dtype (a prune's are timed by `prune`)."""
        if step.step in ("prune", "pruning_time"):
            return None
        rate = matmul_rate(self.rates, self.profile.model.dtype)
        if step.flops is None or not rate:
            return None
        return step.flops / (rate * 1e9)

    def load_note(self) -> str:
        seconds = self.rates.get("load_s_per_gb")
        return (f"{seconds:.3g} s per GB, timed on the one-layer copy saved and loaded back from the page cache" if seconds
                else "? (not timed: no load is counted)")

    def layer_note(self) -> str:
        timed = [f"{seconds * 1e3:.3g} ms ({batch} x {seq} tokens, {dtype})" if seconds is not None
                 else f"? ({batch} x {seq} tokens, {dtype}: the one-layer copy did not run)"
                 for (batch, seq, dtype), seconds in self._layer_seconds.items()]
        return "the seconds of one, timed on a one-layer copy of the model: " + ("; ".join(timed) or "not timed")

    def notes_of(self, streamed: list[str]) -> list[str]:
        """The plan's notes; `streamed`: the labels of the prunes that run layer by layer."""
        rates = self.rates
        p, rate = self.profile, lambda key, unit: f"{rates[key]:.3g} {unit}" if rates.get(key) else "? (not measured)"
        probe = (f"fp32 {rates['fp32_gflops']:.3g}, bf16 {rates['bf16_gflops']:.3g} GFLOP/s" if "fp32_gflops" in rates
                 else f"no matmul rate ({str(rates.get('error')).split('. ')[0]})")
        disk = f"{rates['disk_gbps']:.3g} GB/s" if rates.get("disk_gbps") else "not measured"
        return [
            "peak memory: the measurement's estimate (bench.budget) for the dense model, also beside each pruned "
            "model (which holds less); a prune: its method's formula (laco.pruners.memory_need), resident, or under "
            "[model] max_memory as laco prune --max-memory decides (layer by layer when the resident figure does not "
            "fit; the layer cache included); the interpreter comes on top; the total: the largest peak, the sums of the rest",
            "disk written: a pruned copy's weights = the dense weights in the prune dtype x (1 - the target ratio); "
            "a method without a ratio target (or matching one without) is counted at the dense size",
            f"FLOPs: bench.flops.count_flops of each workload on the meta device (logits of the last position only); "
            f"perplexity {p.perplexity.n_windows or 'every'} windows of {p.perplexity.window} tokens (lm-eval's wikitext not "
            f"counted); accuracy: an item's tokens are its line in the local data file at {CHARS_PER_TOKEN} characters a token "
            f"({ITEM_TOKENS} assumed without one); a prune: the work its method declares (laco.pruners.work_need), "
            "its layer forwards at a layer's share of the calibration forward; a pruned model's: the dense model's x "
            "the parameters kept; ? where unknown",
            f"est. time: a measurement's FLOPs at the probe's matmul rate ({probe}), a decode step at least the weights "
            f"at its memory rate ({rate('memory_gbps', 'GB/s')}); a prune's work piece by piece: "
            f"its layer forwards at {self.layer_note()}, float64 FLOPs at {rate('fp64_gflops', 'GFLOP/s')}, "
            f"elementwise bytes at {rate('memory_gbps', 'GB/s')}, its weights at the disk's write rate "
            f"({disk}); a search (LaCo, drop): a measured share of its most layer forwards (laco.work), its fewest to "
            "most in brackets; a model load (each memory step's, each throughput phase's per model, or per round where "
            f"the phase reloads): its weights at {self.load_note()}; an estimate: a process's start, a dense model's "
            "first read from the disk, and tokenisation left out",
            *([self.reading_note(streamed)] if streamed else []),
        ]








def total(values) -> float | None:
    values = list(values)
    return None if not values or None in values else sum(values)


def size(n: int | None) -> str:
    return NOT_READ if n is None else format_size(n)


def time_cell(step: Step) -> str:
    if step.seconds_range is None:
        return duration(step.seconds)
    return f"{duration(step.seconds)} ({duration(step.seconds_range[0])} to {duration(step.seconds_range[1])})"


def count(flops: float | None) -> str:
    return NOT_READ if flops is None else f"{flops:.3g}"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return NOT_READ
    for unit, scale in (("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.2g} s"
