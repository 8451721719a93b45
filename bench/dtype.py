"""The dtype a run measures in: the profile's `[model] dtype`, or `laco bench --dtype`'s, checked
against the CPU before anything is loaded.

bfloat16 is the paper's dtype (Section 3.8), and on a CPU it is not always fast. AMX tiles multiply
bf16 at several times float32's rate. AVX512-BF16 alone is fast on some CPUs and slow on others,
measured on this project's machines (both with avx512_bf16 and no amx flags), 2026-12-02: on one a
256x4096 @ 4096x11008 product ran at 142 GFLOP/s in bf16 against 202 in float32 and a SmolLM2-135M
forward of 16x128 tokens took 1.38x as long; on an AMD EPYC the same product ran at 107-152 against
49-64 (under load) and the forward took 0.40x as long, and its machine probe, idle, read 344 against
159. Without either torch emulates bf16 through float32. So AMX counts as fast, no native bf16 matmul as slow, and AVX512-BF16
alone is measured as the run starts (the machine probe's matmul, `bench.probe`): fast where bf16 runs
at least BF16_SPEEDUP x float32's rate. `laco.provenance.bf16_matmul` reads which the CPU has; a CPU
run asking for bfloat16 where it is not fast does what the profile's `[model] bf16_fallback` says:
"float32" runs float32 and says so in one line, "refuse" stops with one line, "keep" runs bfloat16 and
says it is slow. It never runs bf16 slowly without a word. `--dtype` is an explicit ask: it runs as
asked (with that line when slow).

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

FAST_BF16_MATMUL = ("amx_bf16",)  # of laco.provenance.BF16_MATMUL_FLAGS: where bf16 beats float32 unmeasured
BF16_SPEEDUP = 1.2  # AVX512-BF16 alone counts as fast where its bf16 matmul runs at this x float32's, measured


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
    asked = [(field, step) for field, step in (("dtype", "bfloat16"),
                                               ("prune_dtype", "bfloat16 pruning ([model] prune_dtype)"))
             if getattr(model, field) == "bfloat16"]
    if not on_cpu or not asked:
        return
    fast, why = bf16_speed()
    for field, step in ([] if fast else asked):
        _settle_slow_bf16(model, field, step, why)


def bf16_speed() -> tuple[bool, str]:
    """(whether bfloat16 is fast on this CPU, why in words): AMX is; no native bf16 matmul is not;
    AVX512-BF16 alone is when its matmul, measured now, runs at BF16_SPEEDUP x float32's rate or more."""
    have = provenance.bf16_matmul()
    if have in FAST_BF16_MATMUL:
        return True, "this CPU has AMX"
    if have is None:
        return False, f"this CPU has no AMX ({flags_read()}), where bfloat16 runs slower than float32"
    fp32, bf16 = matmul_rates()
    return bf16 >= BF16_SPEEDUP * fp32, (
        f"this CPU has no AMX ({flags_read()}), and its bf16 matmul ran at {bf16 / fp32:.2f}x float32's here "
        f"({bf16:,.0f} against {fp32:,.0f} GFLOP/s), where bfloat16 is not faster than float32")


def matmul_rates() -> tuple[float, float]:
    """(float32, bfloat16) matmul GFLOP/s on this CPU now: the machine probe's workload (bench.probe)."""
    from bench.probe import measure

    probe = measure("cpu", 0.2)
    if "error" in probe:
        raise LacoError(f"bfloat16 asked, and this CPU's bf16 matmul could not be measured: {probe['error']}")
    return probe["fp32_gflops"], probe["bf16_gflops"]


def _settle_slow_bf16(model, field: str, step: str, why: str) -> None:
    if model.bf16_fallback == "refuse":
        raise LacoError(f"{step} asked, but {why}; the profile's [model] bf16_fallback is \"refuse\" "
                        "(run with --dtype float32, or set bf16_fallback = \"float32\")")
    if model.bf16_fallback == "keep":
        note = f"{step} kept although {why}"
        if f"{step} kept although" in (model.dtype_note or ""):  # said once
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
