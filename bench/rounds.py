"""Interleaved rounds: every model of a run timed in one phase, round-robin (throughput, pruning time).

A model timed once, minutes apart from the others, measures the machine of that minute as much
as the model (two models with identical weights came out 1.34x apart). Here every model times
one batch per round, in the same order each round (dense, m1, m2, ..., dense, m1, ...), after
`warmup` untimed calls each made in the same interleaved order, so slow drift of the machine
reaches all models alike and round i of one model can be paired with round i of another (the
suites bootstrap the ratio to dense over rounds).

A timer is any object with `.label` and `.time_batch() -> dict`. The pruning phase's timer
returns {total_s} (bench.pruning_time); a throughput timer returns {prefill_s, total_s,
input_tokens, output_tokens[, batch_size]} (`bench.throughput.HfTimer`,
`bench.vllm.client.VllmSession`), its batch size read from that dict or, else, from the timer's
`batch_size` attribute.

`measure_phase` is the one phase driver; what it times comes from a timing (`timing(settings, ctx)`
of bench.throughput, bench.vllm.measure and bench.pruning_time): `rounds` and `warmup`,
`timers(subjects)` (a context manager yielding the timers and the outcomes of the models that take
no part) and `values(timer, done)` (one timed model's result values from `interleave`'s result).

Rates per round, in vLLM's convention:
- prefill tok/s = input_tokens / prefill_s, where prefill_s is the time to the first token
  (TTFT: the prompt forward and the first sampled token);
- decode tok/s = the tokens after the first of each sequence, (output_tokens - batch_size), over
  the time after the first token, (total_s - prefill_s);
- total tok/s = (input_tokens + output_tokens) / total_s; output tok/s = output_tokens / total_s.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence

from bench.subject import Outcome

RATES = ("prefill_tokens_per_s", "decode_tokens_per_s", "total_tokens_per_s", "output_tokens_per_s")
CONVENTION = ("prefill = input_tokens / time to first token; decode = (output_tokens - batch_size) / "
              "(total_s - prefill_s); total = (input_tokens + output_tokens) / total_s; output = output_tokens / total_s")


def measure_phase(timing, subjects: list) -> dict[str, Outcome]:
    """Every subject's outcome of one phase: its timers interleaved, or why it takes no part."""
    with timing.timers(subjects) as (timers, outcomes):
        if timers:
            done = interleave(timers, timing.rounds, timing.warmup)
            for timer in timers:
                outcomes[timer.label] = Outcome("ok", None, timing.values(timer, done))
    return outcomes


def interleave(timers: Sequence, rounds: int, warmup: int, clock: Callable[[], float] = time.time) -> dict:
    """Call every timer `warmup` times untimed, then once per round for `rounds` rounds, in the
    order given; returns {rounds, warmup, labels, order, results}.

    `order` lists every call as it was made (phase "warmup" or "timed", round, position in the
    round, label, wall-clock start from `clock`); `results[label]` the timed calls' results in
    round order."""
    labels = [t.label for t in timers]
    if len(set(labels)) != len(labels):
        raise ValueError(f"timer labels must differ: {labels}")
    if rounds < 1 or warmup < 0:
        raise ValueError(f"rounds must be at least 1 and warmup at least 0 (got {rounds}, {warmup})")
    order: list[dict] = []
    results: dict[str, list[dict]] = {label: [] for label in labels}
    for phase, count in (("warmup", warmup), ("timed", rounds)):
        for r in range(count):
            for position, timer in enumerate(timers):
                order.append({"phase": phase, "round": r, "position": position, "label": timer.label, "started": clock()})
                result = timer.time_batch()
                if phase == "timed":
                    results[timer.label].append(result)
    return {"rounds": rounds, "warmup": warmup, "labels": labels, "order": order, "results": results}


def throughput_of(timer, done: dict) -> dict:
    """A throughput timer's rounds of `done` (interleave's result): per-round results, each with its
    batch size, and rates, and median / min / max of each rate."""
    return summarise([{**result, "batch_size": batch_size_of(timer, result)} for result in done["results"][timer.label]])


def batch_size_of(timer, result: dict) -> int:
    size = result.get("batch_size", getattr(timer, "batch_size", None))
    if size is None:
        raise ValueError(f"timer {timer.label!r} gives no batch_size (in its result or as an attribute)")
    return size


def rates(result: dict) -> dict:
    """The four rates of one timed batch (see the module docstring)."""
    decode_s = result["total_s"] - result["prefill_s"]
    decode_tokens = result["output_tokens"] - result["batch_size"]
    return {
        "prefill_tokens_per_s": result["input_tokens"] / result["prefill_s"],
        "decode_tokens_per_s": decode_tokens / decode_s if decode_tokens > 0 and decode_s > 0 else None,
        "total_tokens_per_s": (result["input_tokens"] + result["output_tokens"]) / result["total_s"],
        "output_tokens_per_s": result["output_tokens"] / result["total_s"],
    }


def summarise(results: list[dict]) -> dict:
    """Per-round results and rates of one model, and median / min / max of each rate."""
    per_round = [rates(r) for r in results]
    out = {"per_round": {"results": results, **{name: [r[name] for r in per_round] for name in RATES}}}
    for name in RATES:
        values = [v for v in out["per_round"][name] if v is not None]
        out[name] = {"median": statistics.median(values), "min": min(values), "max": max(values)} if values else None
    return out
