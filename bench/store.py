"""The run directory: one JSON per (model, measurement), written atomically the moment it is done.

    runs/<ID>/run.json                       the resolved profile and where the run happened
    runs/<ID>/models/<key>.json              what each model is (fingerprint, pruning record, weights)
    runs/<ID>/results/<key>/<measurement>.json

A result is reused on a re-run when its file holds the same model fingerprint and the same
settings hash and its status is "ok"; anything else is measured again ("n/a" too: the reason is
either found at once, like a missing environment, or may be gone, like an engine that failed).
Because every file is renamed into place only
when complete, an interrupted run loses at most the measurement that was in flight.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from laco.provenance import device_info, fingerprint, git_commit, library_versions

RESULT_STATUSES = ("ok", "n/a")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write_json(path: Path, obj: dict) -> Path:
    """Write JSON to a temp file beside `path`, flush it to disk, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; results are for every reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def settings_hash(settings: dict) -> str:
    return fingerprint(settings)


class RunStore:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    # -- run.json -----------------------------------------------------------------------------
    def start(self, profile_name: str, profile: dict, *, data_dir: str | None, seed: int, device: str) -> dict:
        """Write run.json with `finished: null`; a resumed run keeps its first start time."""
        old = read_json(self.root / "run.json") or {}
        run = {
            "profile": profile,
            "profile_name": profile_name,
            "started": old.get("started") or now(),
            "finished": None,
            "resumed": old.get("resumed", []) + ([now()] if old else []),
            "git_commit": git_commit(),
            "libraries": library_versions(),
            "device": device_info(device),
            "seed": seed,
            "data_dir": data_dir,
        }
        atomic_write_json(self.root / "run.json", run)
        return run

    def finish(self) -> None:
        run = read_json(self.root / "run.json") or {}
        run["finished"] = now()
        atomic_write_json(self.root / "run.json", run)

    # -- models/<key>.json --------------------------------------------------------------------
    def model_path(self, key: str) -> Path:
        return self.root / "models" / f"{key}.json"

    def read_model(self, key: str) -> dict | None:
        return read_json(self.model_path(key))

    def write_model(self, doc: dict) -> Path:
        return atomic_write_json(self.model_path(doc["key"]), doc)

    def weights_dir(self, key: str) -> Path:
        """Where a pruned model's weights are saved, so that a resumed run reloads instead of re-pruning."""
        return self.root / "weights" / key

    def cache_dir(self) -> Path:
        return self.root / "cache"

    # -- results/<key>/<measurement>.json -----------------------------------------------------
    def result_path(self, key: str, measurement: str) -> Path:
        return self.root / "results" / key / f"{measurement}.json"

    def read_result(self, key: str, measurement: str) -> dict | None:
        return read_json(self.result_path(key, measurement))

    def is_fresh(self, key: str, measurement: str, model_fingerprint: str, settings_digest: str) -> bool:
        """True when the stored result is "ok" and was measured on the same model with the same settings."""
        doc = self.read_result(key, measurement)
        return bool(
            doc
            and doc.get("model_fingerprint") == model_fingerprint
            and doc.get("settings_hash") == settings_digest
            and doc.get("status") == "ok"
        )

    def write_result(self, doc: dict) -> Path:
        if doc["status"] not in RESULT_STATUSES:
            raise ValueError(f"result status must be one of {RESULT_STATUSES}, got {doc['status']!r}")
        return atomic_write_json(self.result_path(doc["model"], doc["measurement"]), doc)
