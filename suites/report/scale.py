"""The paper's scale rehearsed on this machine: a run on a `synthetic:` stand-in (seeded random weights at
the paper's model shape) beside the paper's Table 4 (pruning time) and Table 20 (memory, tokens/s), and
the same figures projected to the paper's GPU.

Three kinds of figure, each in its own column and never mixed: the paper's (on its A100), ours (measured
on this machine, with its 95% interval), and ours projected to the A100 by the ratio of peak rates
(suites/devices.toml) to the rates the run's machine probe measured: seconds x (our FLOP/s / the A100's) if
the step is compute-bound, x (our bytes/s / the A100's) if it is bandwidth-bound. A projection assumes the
step reaches the same share of the A100's peak as of this machine's probe; it is not a measurement.

Each figure is checked against a bound: parameter memory against parameters x bytes per weight, and a
decode rate against the rate at which the device can read the weights (every decoded token of a batch-1
forward reads each weight once)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from laco.config import Strict, load
from suites import evidence as ev
from suites import statistics as st
from suites.claims import Claims, suites_data
from suites.evidence import DENSE, NotMeasured, Run
from suites.markdown import num, ratio_cell, table
from suites.report.results import DECODE

BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}
MB = 2**20  # the memory measurement's MB (bench.memory)


class Gpu(Strict):
    name: str
    bf16_tflops: float = Field(gt=0)
    memory_gbps: float = Field(gt=0)
    source: str


class Devices(Strict):
    paper_gpu: Gpu


def load_devices() -> Devices:
    return load(suites_data("devices.toml"), Devices, "devices")


class Rates:
    """This run's probe (FLOP/s in the run's dtype, bytes/s) against the paper's GPU's peak rates."""

    def __init__(self, run: Run, gpu: Gpu):
        probe = run.meta.get("probe") or {}
        dtype = (run.profile.get("model") or {}).get("dtype", "float32")
        self.gpu, self.dtype = gpu, dtype
        self.flops = probe.get("bf16_gflops" if BYTES.get(dtype) == 2 else "fp32_gflops")
        self.bandwidth = probe.get("memory_gbps")

    @property
    def known(self) -> bool:
        return bool(self.flops and self.bandwidth)

    def seconds(self, interval: st.Interval, bound: str) -> str:
        """Seconds here as seconds on the GPU, compute- or bandwidth-bound."""
        factor = (self.flops / (self.gpu.bf16_tflops * 1e3) if bound == "compute"
                  else self.bandwidth / self.gpu.memory_gbps)
        return interval.fmt(".3g", factor)

    def rate(self, interval: st.Interval, bound: str) -> str:
        """Tokens/s here as tokens/s on the GPU, compute- or bandwidth-bound."""
        factor = (self.gpu.bf16_tflops * 1e3 / self.flops if bound == "compute"
                  else self.gpu.memory_gbps / self.bandwidth)
        return interval.fmt(".3g", factor)


def scale_section(run: Run, claims: Claims) -> str:
    """The rehearsal's figures beside Tables 4 and 20, and projected to the paper's GPU; '' for a run on real
    weights (its figures are the paper's own kind and its claims say so)."""
    synthetic = run.synthetic
    if not synthetic:
        return ""
    rates = Rates(run, load_devices().paper_gpu)
    model = claims.paper.data.models.get(synthetic.get("name", ""), "")
    rows = pruning_rows(run, claims, model, rates) + memory_rows(run, claims, model) + decode_rows(run, claims, model, rates)
    if not rows:
        return ""
    gpu = rates.gpu
    probe = (f"this machine's probe: {rates.flops:.0f} GFLOP/s in {rates.dtype}, {rates.bandwidth:.1f} GB/s" if rates.known
             else "no machine probe in this run: nothing projected")
    return "\n".join([
        f"## At the paper's scale: ours, and projected to an {gpu.name}",
        "",
        f"The paper's figures ({model or 'its model'}, one A100), ours measured here on the stand-in, and ours projected "
        f"to one {gpu.name} ({gpu.bf16_tflops:g} TFLOP/s bf16, {gpu.memory_gbps:,.0f} GB/s; {gpu.source}) by the ratio "
        f"of its peak rates to {probe}. A projection is arithmetic, not a measurement: it assumes the step keeps the "
        "same share of the A100's peak as of this machine's; compute-bound and bandwidth-bound bracket where it "
        "lies. Intervals: 95%, t on log values over the repeats or rounds. The paper's pruned rows are at its own "
        "ratio (Table 4: 27%; Table 20: Table 1's), which a stand-in's LaCo search need not reach: compare its "
        "\"pruned\".",
        "",
        table(rows, ["figure", "model", "pruned", "paper (A100)", "ours, measured here", "A100 if compute-bound",
                     "A100 if bandwidth-bound", "bound"]),
    ])


def lead(run: Run, figure: str, key: str) -> list[str]:
    """A row's first cells: the figure, the model, how much it removed."""
    return [figure, key, ratio_cell(run, key)]


def paper_value(claims: Claims, table_no: int, column: str, model: str, method: str, fmt: str) -> str:
    fig = claims.paper.figure(table_no, column, model, method) if model else None
    return f"{fmt.format(fig.value)} (Table {table_no})" if fig else "-"


def pruning_rows(run: Run, claims: Claims, model: str, rates: Rates) -> list[list[str]]:
    rows = []
    for key, m in run.models.items():
        if key == DENSE:
            continue
        try:
            seconds = ev.pruning_seconds(run, key)
        except NotMeasured:
            record = m.record or {}
            once = record.get("prune_seconds")
            if once is None:
                continue
            rows.append([*lead(run, "pruning, s", key), paper_value(claims, 4, "seconds", model, m.method, "{:g}"),
                         f"{once:.3g} (one timing, no interval)", "-", "-", "-"])
            continue
        interval = st.log_t_interval(np.log(seconds), f"{len(seconds)} timings")
        projected = [rates.seconds(interval, b) for b in ("compute", "bandwidth")] if rates.known else ["-", "-"]
        rows.append([*lead(run, "pruning, s", key), paper_value(claims, 4, "seconds", model, m.method, "{:g}"),
                     f"{interval.fmt('.3g')} ({len(seconds)} timings)", *projected, "-"])
    return rows


def memory_rows(run: Run, claims: Claims, model: str) -> list[list[str]]:
    rows = []
    nbytes = BYTES.get((run.profile.get("model") or {}).get("dtype", ""), None)
    for key, m in run.models.items():
        measured = run.ok(key, "memory")
        if measured is None or measured.values.get("param_mb") is None:
            continue
        param_mb = measured.values["param_mb"]
        try:
            expected = ev.flops(run, key)["parameters"] * nbytes / MB if nbytes else None
        except (NotMeasured, KeyError, TypeError):
            expected = None
        check = "-" if expected is None else (
            f"= parameters x {nbytes} B" if abs(param_mb - expected) <= 0.005 * expected
            else f"**{param_mb:,.0f} against parameters x {nbytes} B = {expected:,.0f}**")
        rows.append([*lead(run, "parameter memory, MB", key),
                     paper_value(claims, 20, "memory_mb", model, m.method, "{:,.0f}"),
                     f"{param_mb:,.0f} (exact)", "the same bytes", "the same bytes", check])
    return rows


def decode_rows(run: Run, claims: Claims, model: str, rates: Rates) -> list[list[str]]:
    rows = []
    for key, m in run.models.items():
        try:
            r = ev.rounds(run, key, "hf")
        except NotMeasured:
            continue
        per_round = [x for x in r["per_round"].get(DECODE, []) if x and x > 0]
        if not per_round:
            continue
        interval = st.log_t_interval(np.log(per_round), f"{len(per_round)} rounds")
        projected = [rates.rate(interval, b) for b in ("compute", "bandwidth")] if rates.known else ["-", "-"]
        rows.append([*lead(run, "decode, tokens/s (HF)", key),
                     paper_value(claims, 20, "tokens_per_s", model, m.method, "{:.2f}"),
                     f"{interval.fmt('.3g')} ({len(per_round)} rounds, batch {r.get('batch_size', '?')})", *projected,
                     decode_bound(run, key, interval, r.get("batch_size") or 1, rates)])
    return rows


def decode_bound(run: Run, key: str, interval: st.Interval, batch: int, rates: Rates) -> str:
    """The most tokens/s a device can decode when each step reads every weight once: batch x bandwidth /
    weight bytes. A figure above it is not a measurement of decoding."""
    measured = run.ok(key, "memory")
    if not rates.bandwidth or measured is None or not measured.values.get("param_mb"):
        return "-"
    bound = batch * rates.bandwidth * 1e9 / (measured.values["param_mb"] * MB)
    verdict = "within" if interval.estimate <= bound else "**above: not a decode rate**"
    return f"{verdict} ≤ {num(bound, '{:.3g}')} here"
