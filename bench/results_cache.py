"""The shared result cache: what one run measured, every later run on this machine reuses.

A cached figure is keyed by the model's weights (the digest models/<key>.json records, with how the
model is loaded: dtype, device), the settings that produced it (their hash) and the code (the
source digest of laco/ and bench/ and the library versions, as `bench.store.code_key`). Figures of
other code are reused only with --reuse-results-from-other-code, as in a run folder. Timings of
interleaved phases (throughput, pruning time) belong to their run and are never cached.

    $LACO_RESULTS_CACHE (default: <laco.cache.cache_root()>/results)
      entries/<what>/<model>/<settings hash>/<code>.json     a whole result or one part of it
      items/<model>/<task key>/<code>/<chunk>.json           scored accuracy items, by document

Every file is written whole through laco.atomic. Two processes computing the same entry write the
same path: the last rename wins, and a reader sees one complete file or the other. Accuracy items
are appended as chunks of their own (one per scoring), so two writers never overwrite each other's
items; a document scored twice is the same item twice, and the first one read is kept.
Perplexity's windows are kept apart from their count (`bench.perplexity`): an entry of 32 windows
serves a run asking for the first 24.

Every reused figure carries where it was measured: {run_id, run_path, measured_at, seconds}.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from pathlib import Path

from laco import atomic
from laco.cache import cache_root
from laco.provenance import fingerprint

ENV = "LACO_RESULTS_CACHE"


def cache_folder() -> Path:
    return Path(os.environ.get(ENV) or cache_root() / "results")


def code_id(code: dict) -> str:
    """The part of the code key two results must share (what `bench.store.same_code` compares)."""
    return fingerprint({"source_digest": code.get("source_digest"), "libraries": code.get("libraries")})


def model_key(weights_sha256: str | None, load_args: dict) -> str | None:
    """A model as the cache knows it: its weights and how they are loaded (not where they lie)."""
    if not weights_sha256:
        return None
    return fingerprint({"weights": weights_sha256, **{k: v for k, v in load_args.items() if k not in ("spec", "folder")}})


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _taken(entry: dict | None, take: Callable[[dict], dict | None] | None) -> dict | None:
    if entry is None or take is None:
        return entry
    values = take(entry["values"])
    return None if values is None else {**entry, "values": values}


class ResultsCache:
    """One run's view of the shared cache, with its hits and misses."""

    def __init__(self, root: Path, code: dict, *, reuse_other_code: bool = False):
        self.root, self.code, self.reuse_other_code = Path(root), code_id(code), reuse_other_code
        self.counts = {"hits": 0, "misses": 0, "items_reused": 0, "items_scored": 0}

    # -- whole results and parts ----------------------------------------------------------------
    def _entry_folder(self, what: str, model: str, digest: str) -> Path:
        return self.root / "entries" / what / model / digest

    def get(self, what: str, model: str | None, digest: str, take: Callable[[dict], dict | None] | None = None
            ) -> dict | None:
        """{"values", "origin"} of `what` (a measurement, or "measurement.part") for the model and
        settings; None (a miss) when there is none of this code (or of any code, when allowed). `take`
        gives this run's values out of an entry's, or None when the entry cannot serve (perplexity:
        too few windows)."""
        if model is None:
            return None
        folder = self._entry_folder(what, model, digest)
        found = _taken(_read(folder / f"{self.code}.json"), take)
        if found is None and self.reuse_other_code:
            others = [e for e in (_taken(e, take) for e in map(_read, sorted(folder.glob("*.json")))) if e]
            found = max(others, key=lambda e: e["origin"].get("measured_at") or "", default=None)
        self.counts["hits" if found else "misses"] += 1
        return found

    def put(self, what: str, model: str | None, digest: str, values: dict, origin: dict) -> None:
        if model is not None:
            atomic.write_json(self._entry_folder(what, model, digest) / f"{self.code}.json",
                              {"values": values, "origin": origin}, compact=True)

    # -- accuracy items --------------------------------------------------------------------------
    def _item_folders(self, model: str, task_key: str) -> list[Path]:
        base = self.root / "items" / model / task_key
        if self.reuse_other_code:
            return sorted(base.glob("*"), key=lambda p: p.name != self.code)  # this code's first
        return [base / self.code]

    def items(self, model: str | None, task_key: str) -> tuple[dict, dict]:
        """({leaf: {doc_id: item}}, {leaf: documents in the leaf}) of every chunk scored so far."""
        items: dict[str, dict[int, dict]] = {}
        docs: dict[str, int] = {}
        if model is None:
            return items, docs
        for folder in self._item_folders(model, task_key):
            for chunk in map(_read, sorted(folder.glob("*.json"))):
                if not chunk:
                    continue
                docs.update(chunk.get("docs") or {})
                for leaf, rows in (chunk.get("items") or {}).items():
                    kept = items.setdefault(leaf, {})
                    for row in rows:
                        kept.setdefault(int(row["doc_id"]), {**row, "origin": chunk["origin"]})
        return items, docs

    def add_items(self, model: str | None, task_key: str, docs: dict, items: dict, origin: dict) -> None:
        """One chunk: the items just scored ({leaf: [item]}) and the leaves' document counts."""
        if model is not None and any(items.values()):
            path = self.root / "items" / model / task_key / self.code / f"{uuid.uuid4().hex}.json"
            atomic.write_json(path, {"docs": docs, "items": items, "origin": origin}, compact=True)
