"""Pruning time: the wall time of the pruning step alone, excluding load and save (paper Table 4).

Every pruner measures its own step and records it as `prune_seconds` (LaCo in target mode: the final
search at the threshold the bisection chose, which is what the paper times). One timing on a shared
machine is a point, not a measurement, and timings minutes apart measure the machine's drift as much
as the method. So, after all models are pruned, every method prunes the dense model again in
interleaved rounds (each from a fresh copy, with the same arguments and calibration texts), and
round i of each method is paired with round i of the others. A re-pruning that does not give the
same model (parameter count) is an error, not a timing.
"""

from __future__ import annotations

import statistics

from bench.subject import Outcome


def settings(ctx) -> dict:
    return {"source": "pruner record: prune_seconds (the pruning step alone)", "protocol": "interleaved rounds",
            "rounds": ctx.profile["pruning_time"]["repeats"], "device": ctx.profile["model"]["device"],
            "dtype": ctx.profile["model"]["dtype"]}


def measure_phase(subjects: list, settings: dict, ctx) -> dict[str, Outcome]:
    """Every pruned model's pruner run again, round-robin, `rounds` times (the runner leaves dense out)."""
    pruned = [s for s in subjects if s.method != "dense"]
    outcomes: dict[str, Outcome] = {}
    timable = [s for s in pruned if s.prune_call]
    for s in pruned:
        if not s.prune_call:
            outcomes[s.key] = Outcome.not_available("no recorded pruner call to time again (pruned by older code)")
    timings: dict[str, list[float]] = {s.key: [] for s in timable}
    for _ in range(settings["rounds"]):
        for s in timable:
            timings[s.key].append(prune_again(s.prune_call, ctx, s.record["parameters"]["after"]))
    for s in timable:
        outcomes[s.key] = Outcome("ok", None, {
            "seconds": statistics.median(timings[s.key]), "repeats": timings[s.key],
            "first": float(s.record["prune_seconds"]), "interleaved_with": [x.key for x in timable],
            "per_round": {"seconds": timings[s.key], "results": [{"total_s": t} for t in timings[s.key]]},
            "engine_comparison": s.record.get("engine_comparison")})
    return outcomes


def prune_again(call: dict, ctx, expected_parameters: int) -> float:
    from laco.loading import load_model
    from laco.pruners import get_pruner

    m = ctx.profile["model"]
    loaded = load_model(m["spec"], dtype=m["dtype"], device=m["device"], revision=m.get("revision"),
                        trust_remote_code=m["trust_remote_code"], device_map=m["device_map"])
    outcome = get_pruner(call["name"])(loaded, call["sentences"], progress=False, **call["kwargs"])
    after, seconds = outcome.record["parameters"]["after"], float(outcome.record["prune_seconds"])
    if after != expected_parameters:
        raise RuntimeError(f"pruning again gave {after} parameters, the run's model has {expected_parameters}")
    return seconds
