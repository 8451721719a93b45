"""Pruning time: the wall time of the pruning step alone, excluding load and save (paper Table 4).

Every pruner measures its own step and records it as `prune_seconds` (LaCo in target mode: the final
search at the threshold the bisection chose, which is what the paper times). One timing on a shared
machine is a point, not a measurement, and timings minutes apart measure the machine's drift as much
as the method. So, after all models are pruned, every method prunes the dense model again in
interleaved rounds (each from a fresh copy in the prune dtype, `[model] prune_dtype`: float32 in the CPU
profiles whatever dtype they measure in; with the same arguments and calibration texts), and
round i of each method is paired with round i of the others. A re-pruning that does not give the
same model (parameter count) is an error, not a timing.
"""

from __future__ import annotations

import statistics
from contextlib import contextmanager

from bench.subject import Outcome


def settings(ctx) -> dict:
    return {"source": "pruner record: prune_seconds (the pruning step alone)", "protocol": "interleaved rounds",
            "rounds": ctx.profile.pruning_time.repeats, "device": ctx.profile.model.device,
            "dtype": ctx.profile.model.pruning_dtype()}  # the prune dtype ([model] prune_dtype), not the measurements'


class PruneTimer:
    """One method's pruner run again on a fresh dense copy: its `prune_seconds` is the timing."""

    def __init__(self, subject, ctx):
        self.label, self.subject, self.ctx = subject.key, subject, ctx

    def time_batch(self) -> dict:
        return {"total_s": prune_again(self.subject.prune_call, self.ctx, self.subject.record["parameters"]["after"])}


class PruningTiming:
    """The pruning-time phase (bench.rounds.measure_phase): every pruned model's pruner run again,
    round-robin, `rounds` times, no warm-up (dense takes no part)."""

    def __init__(self, settings: dict, ctx):
        self.ctx, self.rounds, self.warmup = ctx, settings["rounds"], 0

    @contextmanager
    def timers(self, subjects: list):
        pruned = [s for s in subjects if s.method != "dense"]
        outcomes = {s.key: Outcome.not_available("no recorded pruner call to time again (pruned by older code)")
                    for s in pruned if not s.prune_call}
        yield [PruneTimer(s, self.ctx) for s in pruned if s.prune_call], outcomes

    def values(self, timer: PruneTimer, done: dict) -> dict:
        timings = [result["total_s"] for result in done["results"][timer.label]]
        record = timer.subject.record
        return {"seconds": statistics.median(timings), "repeats": timings, "first": float(record["prune_seconds"]),
                "interleaved_with": done["labels"],
                "per_round": {"seconds": timings, "results": [{"total_s": t} for t in timings]},
                "engine_comparison": record.get("engine_comparison")}


def timing(settings: dict, ctx) -> PruningTiming:
    return PruningTiming(settings, ctx)


def prune_again(call: dict, ctx, expected_parameters: int) -> float:
    from laco.pruners import get_pruner

    from bench import streamed

    kwargs = {**call["kwargs"], "progress": False}
    plan = streamed.memory_plan(call["name"], kwargs, ctx, call["sentences"], call.get("source"))
    if plan is not None and plan.stream:  # as the run pruned it: layer by layer under [model] max_memory
        record = streamed.prune_seconds(call["name"], kwargs, ctx, call["sentences"], plan, call.get("source"))
    else:
        loaded = ctx.load_to_prune(call.get("source"), call.get("source_label"))  # a re-pruning entry: its source's model
        record = get_pruner(call["name"])(loaded, call["sentences"], **kwargs).record
    after, seconds = record["parameters"]["after"], float(record["prune_seconds"])
    if after != expected_parameters:
        raise RuntimeError(f"pruning again gave {after} parameters, the run's model has {expected_parameters}")
    return seconds
