"""The dtype a run measures in: the profile's `[model] dtype`, or `laco bench --dtype`'s, checked
against the CPU before anything is loaded.

bfloat16 is the paper's dtype (Section 3.8), and on a CPU it is fast only with AMX: its tiles multiply
bf16 at several times float32's rate. AVX512-BF16's dot products alone are slower than float32's fused
multiply-adds (measured on this project's 2-core machine, whose flags show avx512_bf16 and no amx:
a 256x4096 @ 4096x11008 product at 142 GFLOP/s in bf16 against 202 in float32 on 2026-12-02, 0.55-0.7x
on other days; a SmolLM2-135M forward of 16x128 tokens 1.38x as long), and without either torch
emulates bf16 through float32. So AMX alone counts as fast.
`laco.provenance.bf16_matmul` reads which the CPU has; a CPU run asking for bfloat16 where it is not
fast does what the profile's `[model] bf16_fallback` says: "float32" runs float32 and says so in one
line, "refuse" stops with one line, "keep" runs bfloat16 and says it is slow. It never runs bf16
slowly without a word. `--dtype` is an explicit ask: it runs as asked (with that line when slow).

Every measurement's settings and every model's fingerprint carry the dtype run, so results of two
dtypes are never taken for one another; run.json keeps it (profile.model.dtype) with the reason it
differs from the profile's (profile.model.dtype_note) and the CPU's bf16 matmul (device.bf16_matmul),
and the report's header shows both. The pruning step runs in `[model] prune_dtype` instead (the CPU
profiles: float32; bench.pruned), and its weights are measured in the dtype settled here.
"""

from __future__ import annotations

import sys

from bench.profile import Profile
from laco import LacoError, provenance

FAST_BF16_MATMUL = ("amx_bf16",)  # of laco.provenance.BF16_MATMUL_FLAGS: where bf16 beats float32


def override_dtype(profile: Profile, dtype: str | None) -> None:
    """`laco bench --dtype`: run the profile in `dtype` instead of its own, as asked (noted in run.json)."""
    model = profile.model
    if dtype is None:
        return
    if dtype != model.dtype:
        model.dtype_note = f"--dtype {dtype} over the profile's {model.dtype}"
    model.dtype, model.bf16_fallback = dtype, "keep"


def settle_dtype(profile: Profile) -> None:
    """Refuse, fall back to float32, or keep bfloat16, as the profile's bf16_fallback says, when a CPU run
    asks for bfloat16 on a CPU where it is not fast, for measuring (`dtype`) and for pruning (an explicit
    `prune_dtype`), saying so in one line each; else change nothing."""
    model = profile.model
    on_cpu = model.device == "cpu" and model.device_map is None
    if not on_cpu or provenance.bf16_matmul() in FAST_BF16_MATMUL:
        return
    for field, step in (("dtype", "bfloat16"), ("prune_dtype", "bfloat16 pruning ([model] prune_dtype)")):
        if getattr(model, field) == "bfloat16":
            _settle_slow_bf16(model, field, step)


def _settle_slow_bf16(model, field: str, step: str) -> None:
    why = f"this CPU has no AMX ({flags_read()}), where bfloat16 runs slower than float32"
    if model.bf16_fallback == "refuse":
        raise LacoError(f"{step} asked, but {why}; the profile's [model] bf16_fallback is \"refuse\" "
                        "(run with --dtype float32, or set bf16_fallback = \"float32\")")
    if model.bf16_fallback == "keep":
        note = f"{step} kept although {why}"
        if note in (model.dtype_note or ""):  # said once
            return
    else:
        note = f"float32 instead of {step}: {why} ([model] bf16_fallback = \"float32\")"
        setattr(model, field, "float32")
    model.dtype_note = "; ".join(filter(None, [model.dtype_note, note]))
    print(f"laco bench: {note}", file=sys.stderr)


def flags_read() -> str:
    """The bf16 matmul flags /proc/cpuinfo shows and lacks, for the one line that says why."""
    flags = provenance.cpu_flags()
    wanted = sorted({flag for needed in provenance.BF16_MATMUL_FLAGS.values() for flag in needed})
    shown = [flag for flag in wanted if flag in flags]
    kind = "only AVX512-BF16" if provenance.bf16_matmul(flags) else "no native bf16 matmul at all"
    if not shown:
        return f"{kind}: /proc/cpuinfo shows none of {' '.join(wanted)}"
    return f"{kind}: /proc/cpuinfo shows {' '.join(shown)}, not {' '.join(f for f in wanted if f not in flags)}"
