"""Reading a run directory written by `laco bench`: the one place that knows its layout.

    runs/<ID>/run.json                          the profile and the run's provenance
    runs/<ID>/models/<key>.json                 one per model ("dense" or a method label)
    runs/<ID>/results/<key>/<measurement>.json  one per finished measurement

A result whose `model_fingerprint` differs from its model's fingerprint belongs to an older
model under the same key (a changed setting): it is treated as not measured, never reused.
Everything here only reads; judging is in `laco.report.judge`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from laco import LacoError

DENSE = "dense"
MEASUREMENTS = ("accuracy", "perplexity", "memory", "throughput_hf", "throughput_vllm", "pruning_time")


@dataclass
class Measurement:
    model: str
    name: str
    status: str  # "ok" | "n/a"
    reason: str | None
    values: dict
    settings: dict
    provenance: dict

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class Model:
    key: str
    method: str
    fingerprint: str
    record: dict
    saved: str | None

    @property
    def pruning_ratio(self) -> float | None:
        return (self.record.get("parameters") or {}).get("pruning_ratio")


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
    def profile_name(self) -> str:
        return self.meta.get("profile_name") or (self.meta.get("profile") or {}).get("name") or "unknown"

    def measurement(self, key: str, name: str) -> Measurement | None:
        return self.results.get(key, {}).get(name)

    def ok(self, key: str, name: str) -> Measurement | None:
        """The measurement when it finished with status ok, else None."""
        m = self.measurement(key, name)
        return m if m is not None and m.ok else None

    def missing_reason(self, key: str, name: str) -> str:
        """Why `name` of `key` has no usable value, in a few words."""
        if key not in self.models:
            return f"run has no model {key!r}"
        m = self.measurement(key, name)
        if m is None:
            return f"{key}: {name} stale (older model)" if f"{key}/{name}" in self.stale else f"{key}: no {name} result"
        return f"{key}: {name} n/a ({m.reason or 'no reason given'})"

    def keys_of(self, methods: list[str] | tuple[str, ...]) -> list[str]:
        """Model keys whose method is one of `methods`, in the run's order."""
        return [k for k, m in self.models.items() if m.method in methods]


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LacoError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None


def load_run(path: str | Path) -> Run:
    """Read a run directory; a missing run.json or models/ is bad input (LacoError)."""
    path = Path(path)
    if not (path / "run.json").is_file():
        raise LacoError(f"not a run directory (no run.json): {path}")
    meta = _read_json(path / "run.json")
    models: dict[str, Model] = {}
    for file in sorted((path / "models").glob("*.json")):
        d = _read_json(file)
        key = d.get("key") or file.stem
        models[key] = Model(key, d.get("method", key), d.get("fingerprint", ""), d.get("record") or {}, d.get("saved"))
    models = dict(sorted(models.items(), key=lambda kv: _model_order(kv[1])))
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
            d.get("settings") or {}, d.get("provenance") or {},
        )
    return Run(path, meta, models, results, stale)


def _model_order(model: Model) -> tuple[int, str]:
    """Dense first, then LaCo, then the other methods by key: a stable order for tables."""
    rank = 0 if model.key == DENSE else 1 if model.method == "laco" else 2
    return (rank, model.key)
