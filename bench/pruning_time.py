"""Pruning time: the wall time of the pruning step alone, excluding load and save (paper Table 4).

Every pruner measures it itself and records it as `prune_seconds`; this measurement copies it
from the record, so a resumed run that reloads a saved model reports the time of the pruning
that made it. The dense model has none (the runner writes no such file for it).
"""

from __future__ import annotations

from bench.subject import Outcome


def settings(ctx) -> dict:
    return {"source": "pruner record: prune_seconds"}


def measure(subject, settings: dict, ctx) -> Outcome:
    record = subject.record
    values = {"seconds": record["prune_seconds"], "device": (record.get("device") or {}).get("device")}
    if record.get("engine_comparison"):
        values["engine_comparison"] = record["engine_comparison"]
    return Outcome("ok", None, values)
