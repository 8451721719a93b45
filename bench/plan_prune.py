"""A prune's row of the run's plan (`bench.plan`): its peak memory, the disk it writes, its FLOPs and time.

- memory: the method's declared formula (`laco.pruners.memory_need`) on the model's shape and its
  calibration batch, resident; under `[model] max_memory`, as `laco prune --max-memory` decides
  (`laco.stream.plan.plan_memory`): resident when that fits, else layer by layer, its layer cache
  included; a method that fits neither way is refused here, in one line, before the run;
- time: the work the method declares (`laco.pruners.work_need`) at this machine's rates, its weights
  at the disk's write rate, and a streamed prune's layer reads (`reading_seconds`).
"""

from __future__ import annotations

from dataclasses import dataclass

NOT_READ = "?"


@dataclass
class Step:
    model: str
    step: str
    memory: int | None = None  # bytes at the peak, beside the interpreter
    disk: int = 0  # bytes written to the run folder
    flops: float | None = None
    seconds: float | None = None
    seconds_range: tuple[float, float] | None = None  # a search's fewest and most
    streamed: bool = False  # a prune run layer by layer under [model] max_memory


class PruneSizing:
    """The prune rows of `bench.plan.Sizing` (which holds the profile, the rates, the model's config)."""

    def prune(self, method, ratio: float | None, kept: float) -> Step:
        from laco.pruners import work_need

        shape = self.prune_shape(method)
        if shape is None:
            return Step(method.label, "prune")
        params = {**method.params, **({"target_ratio": ratio} if ratio is not None else {})}
        memory, streamed = self.prune_memory(method.name, shape, params)
        step = Step(method.label, "prune", memory, int(shape.weight_bytes * kept), streamed=streamed)
        work = work_need(method.name, shape, **params)
        forward = self.count(shape.batch, shape.seq, 1, "prefill")  # the calibration batch through every layer
        if work is None or forward is None:
            return step
        layer_flops = forward / shape.n_layers
        step.flops = work.layer_forwards * layer_flops + work.flops + work.float64_flops
        step.seconds = self.prune_seconds(work, work.layer_forwards, shape, step)
        if step.seconds is not None and work.layer_forwards_range is not None:
            step.seconds_range = tuple(self.prune_seconds(work, forwards, shape, step)
                                       for forwards in work.layer_forwards_range)
        return step

    def prune_memory(self, method_name: str, shape, params: dict) -> tuple[int | None, bool]:
        """The prune's peak beside the interpreter, and whether it streams (see the module docstring)."""
        from laco.memory import parse_size
        from laco.pruners import memory_need
        from laco.stream.plan import plan_memory

        m = self.profile.model
        if m.max_memory is None:
            parts = memory_need(method_name, shape, streamed=False, **params)
            return (None if parts is None else sum(parts.values())), False
        plan = plan_memory(method_name, shape, params, max_memory=parse_size(m.max_memory), spec=m.spec,
                           bound_from="[model] max_memory")
        return (None, False) if plan is None else (plan.estimate() - plan.runtime, plan.stream)

    def prune_seconds(self, work, layer_forwards: float, shape, step: Step) -> float | None:
        """The work, the weights written, and a streamed prune's layer reads; None where a rate is not measured."""
        seconds = self.work_seconds(work, layer_forwards, shape)
        reading = self.reading_seconds(layer_forwards, shape) if step.streamed else 0.0
        return None if seconds is None or reading is None else seconds + reading + self.writing_seconds(step)

    def reading_seconds(self, layer_forwards: float, shape) -> float | None:
        """A streamed prune reads a layer for each layer forward and each layer once more to write it (its own
        layer cache left out: an upper figure). The first n_layers reads, a pass over the model, come from the
        disk; the rest from the page cache for the share of the model's files the machine holds beside the
        bound, from the disk for the other share (a pass over files larger than the page cache evicts what
        the next pass would read)."""
        import psutil

        from laco.memory import parse_size

        rates = self.read_rates()
        disk, cached = rates.get("read_disk_gbps"), rates.get("read_cached_gbps")
        if not disk or not cached:
            return None
        room = psutil.virtual_memory().total - parse_size(self.profile.model.max_memory)
        held = min(1.0, max(0.0, room / shape.weight_bytes))
        first, again = shape.n_layers * shape.layer_bytes, layer_forwards * shape.layer_bytes
        return (first / disk + again * (held / cached + (1 - held) / disk)) / 1e9

    def reading_note(self, labels: list[str]) -> str:
        r = self.rates
        rates = (f"{r['read_disk_gbps']:.3g} GB/s from the disk, {r['read_cached_gbps']:.3g} from the page cache "
                 f"({r['read_from']})" if r.get("read_disk_gbps") else "? (not measured)")
        return (f"a prune layer by layer ({', '.join(labels)}): also its layer reads, one per layer forward and one "
                f"per layer to write it; the first pass over the model from the disk, the rest from the page cache for "
                f"the share of the model the machine holds beside max_memory ({self.profile.model.max_memory}), from "
                f"the disk for the other share; read rates: {rates}")

    def read_rates(self) -> dict:
        """The layer read rates (`bench.disk.layer_read_rates`), measured once, kept in the plan's rates."""
        from bench.disk import layer_read_rates
        from laco.architectures import layer_list_path
        from laco.stream.model import torch_dtype

        if "read_from" in self.rates or (self.folder is None and self.disk_at is None):
            return self.rates
        dtype = torch_dtype(self.profile.model.pruning_dtype(), self.config)
        found = layer_read_rates(self.folder, f"{layer_list_path(self.meta)}.0.", self.disk_at, dtype)
        self.rates.update(found or {"read_from": "not measured"})
        return self.rates

    def work_seconds(self, work, layer_forwards: float, shape) -> float | None:
        """A prune's work (`laco.work.Work`) at this machine's rates; None where one it needs is not measured."""
        dtype, rates = self.profile.model.pruning_dtype(), self.rates
        per_second = {"flops": matmul_rate(rates, dtype),
                      "float64_flops": rates.get("fp64_gflops"), "memory_bytes": rates.get("memory_gbps")}  # x 1e9
        amounts = {name: getattr(work, name) for name in per_second}
        one = self.layer_seconds(shape, dtype) if layer_forwards else 0.0
        if one is None or any(amounts[name] and not per_second[name] for name in per_second):
            return None
        return layer_forwards * one + sum(amounts[n] / (per_second[n] * 1e9) for n in per_second if amounts[n])

    def layer_seconds(self, shape, dtype: str) -> float | None:
        """One decoder layer's forward over the calibration batch, timed once per batch shape."""
        from bench.probe import layer_forward_seconds

        key = (shape.batch, shape.seq, dtype)
        if key not in self._layer_seconds:
            m = self.profile.model
            self._layer_seconds[key] = layer_forward_seconds(self.config, shape.batch, shape.seq, dtype, probe_device(m),
                                                             trust_remote_code=m.trust_remote_code)
        return self._layer_seconds[key]

    def writing_seconds(self, step: Step) -> float:
        rate = self.rates.get("disk_gbps")
        return step.disk / (rate * 1e9) if step.disk and rate else 0.0

    def prune_shape(self, method):
        """The dense model's shape in the prune dtype with the method's calibration batch (None: not read)."""
        from laco.stream.plan import config_shape, model_shape

        calibration = method.calibration or self.profile.calibration
        if self.meta is None:
            return None
        if id(calibration) not in self._prune_shapes:
            try:
                from bench.calibration import calibration_texts
                from bench.model_files import stand_in_tokenizer

                sentences, _ = calibration_texts(calibration, self.data_dir, self.profile)
                m = self.profile.model
                self._prune_shapes[id(calibration)] = (
                    model_shape(str(self.folder), m.pruning_dtype(), sentences, m.trust_remote_code) if self.folder
                    else config_shape(self.config, stand_in_tokenizer(self.config.vocab_size), m.pruning_dtype(),
                                      sentences, m.trust_remote_code))
            except Exception as exc:  # noqa: BLE001  (the run's own check of the calibration says what is wrong)
                self._prune_shapes[id(calibration)] = None
                self.notes.append(f"{NOT_READ}: the calibration of {method.label} is not read here ({first_line(exc)})")
        return self._prune_shapes[id(calibration)]


def probe_device(model_settings) -> str:
    """Where the run computes: its device, or the GPUs a device_map spreads the model over."""
    return "cuda" if model_settings.device_map else model_settings.device


def matmul_rate(rates: dict, dtype: str) -> float | None:
    """The probe's matmul rate (GFLOP/s) in a dtype: its 2-byte figure for bfloat16 and float16."""
    return rates.get("bf16_gflops" if dtype in ("bfloat16", "float16") else "fp32_gflops")


def first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"
