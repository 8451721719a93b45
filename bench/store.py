"""The run directory: one JSON per (model, measurement), written atomically the moment it is done.

    runs/<ID>/run.json                       the resolved profile, where the run happened, and the
                                             history of the code versions that wrote into it
    runs/<ID>/models/<key>.json              what each model is (identity, pruning record, weights)
    runs/<ID>/results/<key>/<measurement>.json

A result is keyed by everything that determines it: the model's identity (its weights digest among
it), the measurement's settings, and the code that measured it (`laco.provenance.code_identity`, plus
the library versions). It is reused on a re-run only when all of these match and its status is "ok";
a result of other code is re-measured unless the caller allows reuse explicitly, and the report marks
it. A failed measurement replaces the previous file of that (model, measurement) with a "failed"
record, so no later step can read a number the current code did not produce; a measurement made of
parts keeps those that succeeded (bench.parts). A result taken from the shared result cache
(bench.results_cache) says so in `provenance.reused_from`: {run_id, run_path, measured_at, seconds}.

Every file is renamed into place only when complete (laco.atomic), so a process killed at any point loses at most
the measurement that was in flight; the temporary files such a kill leaves are removed when the run
is opened again.
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from bench.probe import measure as machine_probe
from laco import atomic
from laco.provenance import code_identity, device_info, fingerprint, library_versions

RESULT_STATUSES = ("ok", "n/a", "failed")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def settings_hash(settings: dict) -> str:
    return fingerprint(settings)


def code_key() -> dict:
    """The code and environment part of a result's key."""
    return {**code_identity(), "libraries": fingerprint(library_versions())}


def same_code(a: dict | None, b: dict | None) -> bool:
    return bool(a and b and a.get("source_digest") == b.get("source_digest") and a.get("libraries") == b.get("libraries"))


class RunStore:
    def __init__(self, root: str | Path, *, reuse_other_code: bool = False):
        self.root = Path(root)
        self.reuse_other_code = reuse_other_code

    # -- run.json -----------------------------------------------------------------------------
    def start(self, profile_name: str, profile: dict, *, data_dir: str | None, seed: int, device: str) -> dict:
        """Write run.json with `finished: null`; a resumed run keeps its first start time and adds the
        current code to the history of code versions that wrote into the run."""
        self.clean_temporaries()
        old = read_json(self.root / "run.json") or {}
        code = code_key()
        history = list(old.get("code_history", []))
        probe = machine_probe(device)  # this machine's speed now: compare/history normalise rates by it
        if not history or not same_code(history[-1], code):
            history.append({**code, "since": now()})
        run = {
            "profile": profile,
            "profile_name": profile_name,
            "started": old.get("started") or now(),
            "finished": None,
            "resumed": old.get("resumed", []) + ([now()] if old else []),
            "git_commit": code["commit"],
            "code": code,
            "code_history": history,
            "reuse_other_code": self.reuse_other_code,
            "libraries": library_versions(),
            "device": device_info(device),
            # the first segment's probe stays the run's (a resume must not re-normalise what was measured
            # before it); every segment's probe is kept beside it
            "probe": old.get("probe") or probe,
            "probes": old.get("probes", [old["probe"]] if old.get("probe") else []) + [{**probe, "at": now()}],
            "seed": seed,
            "data_dir": data_dir,
        }
        atomic.write_json(self.root / "run.json", run)
        return run

    def count_cache(self, folder: Path | None, counts: dict) -> None:
        """Add this invocation's use of the shared result cache to run.json (a resume adds its own)."""
        run = read_json(self.root / "run.json") or {}
        old = run.get("results_cache") or {}
        run["results_cache"] = {"folder": str(folder) if folder else None,
                                **{k: (old.get(k) or 0) + v for k, v in counts.items()}}
        atomic.write_json(self.root / "run.json", run)

    def finish(self) -> None:
        run = read_json(self.root / "run.json") or {}
        run["finished"] = now()
        atomic.write_json(self.root / "run.json", run)

    def clean_temporaries(self) -> list[Path]:
        """Remove what a killed process left (laco.atomic's temporaries): JSON files and weight folders half written."""
        return atomic.clean_temporaries(self.root)

    # -- models/<key>.json --------------------------------------------------------------------
    def model_path(self, key: str) -> Path:
        return self.root / "models" / f"{key}.json"

    def read_model(self, key: str) -> dict | None:
        return read_json(self.model_path(key))

    def write_model(self, doc: dict) -> Path:
        return atomic.write_json(self.model_path(doc["key"]), doc)

    def forget_model(self, key: str) -> None:
        """A failed prune: its earlier record and weights must not be read by any later step."""
        self.model_path(key).unlink(missing_ok=True)
        shutil.rmtree(self.weights_dir(key), ignore_errors=True)
        shutil.rmtree(self.post_trained_dir(key), ignore_errors=True)
        shutil.rmtree(self.root / "results" / key, ignore_errors=True)

    def weights_dir(self, key: str) -> Path:
        """Where a pruned model's weights are saved, so that a resumed run reloads instead of re-pruning."""
        return self.root / "weights" / key

    def post_trained_dir(self, key: str) -> Path:
        """Where the post-trained model of a method entry is saved, beside its pruned model ("+" is in no label)."""
        return self.root / "weights" / f"{key}+post-trained"

    def cache_dir(self) -> Path:
        return self.root / "cache"

    # -- results/<key>/<measurement>.json -----------------------------------------------------
    def result_path(self, key: str, measurement: str) -> Path:
        return self.root / "results" / key / f"{measurement}.json"

    def read_result(self, key: str, measurement: str) -> dict | None:
        return read_json(self.result_path(key, measurement))

    def is_fresh(self, key: str, measurement: str, model_fingerprint: str, settings_digest: str) -> bool:
        """True when the stored result is "ok" with no failed part (bench.parts), of the same model, with
        the same settings, and measured by the same code (or by other code, when the run allows reusing it)."""
        doc = self.read_result(key, measurement)
        return bool(
            doc
            and doc.get("model_fingerprint") == model_fingerprint
            and doc.get("settings_hash") == settings_digest
            and doc.get("status") == "ok"
            and not any(p.get("status") != "ok" for p in ((doc.get("values") or {}).get("parts") or {}).values())
            and (self.reuse_other_code or same_code(doc.get("code"), code_key()))
        )

    def write_result(self, doc: dict) -> Path:
        if doc["status"] not in RESULT_STATUSES:
            raise ValueError(f"result status must be one of {RESULT_STATUSES}, got {doc['status']!r}")
        doc.setdefault("code", code_key())
        return atomic.write_json(self.result_path(doc["model"], doc["measurement"]), doc, compact=True)  # long lists
