"""A measurement made of parts keeps every part that succeeded.

Perplexity has two parts (its windows and lm-eval's word perplexity), accuracy one per task. Each
part is, in this order: kept from the model's earlier result in the run (same part settings, same
code), reused from the shared result cache (`bench.results_cache`), or measured. A part that fails
is recorded with its reason and the others are kept, so a resume measures only what is missing.

The result records every part in `values.parts`:

    {PART: {"status": "ok" | "failed", "reason": str | None, "settings_hash": str,
            "reused_from": {run_id, run_path, measured_at, seconds}   (when taken from the cache)
            "items_reused": int, "items_scored": int                  (accuracy, per item)}}

Its status is "ok" while one part or more succeeded (its `reason` then names the failed parts), and
"failed" when every part failed. A result with a failed part is not fresh: the next run of the
profile measures that part again, and only that part.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from bench.store import code_key, now, same_code, settings_hash
from bench.subject import Outcome
from laco import LacoError


def cache_model(ctx, subject) -> str | None:
    """The model's key in the shared cache (None: the cache is off or the weights have no digest)."""
    from bench.results_cache import model_key

    if ctx.results_cache is None:
        return None
    return model_key((ctx.store.read_model(subject.key) or {}).get("weights_sha256"), subject.load_args)


def origin(ctx, started: str, seconds: float) -> dict:
    """Where a figure put into the shared cache was measured."""
    return {"run_id": ctx.store.root.name, "run_path": str(ctx.store.root.resolve()), "measured_at": started,
            "seconds": seconds}


def failed_parts(values: dict | None) -> dict[str, str]:
    """{part: reason} of the parts of a result's values that failed."""
    return {name: part.get("reason") or "no reason given" for name, part in ((values or {}).get("parts") or {}).items()
            if part.get("status") != "ok"}


class Parts:
    """The parts of one (model, measurement) result as they are gathered."""

    def __init__(self, subject, measurement: str, ctx):
        self.subject, self.measurement, self.ctx = subject, measurement, ctx
        self.record: dict[str, dict] = {}
        self.model = cache_model(ctx, subject)
        doc = ctx.store.read_result(subject.key, measurement) or {}
        usable = (doc.get("model_fingerprint") == subject.fingerprint
                  and (ctx.store.reuse_other_code or same_code(doc.get("code"), code_key())))
        self.earlier = (doc.get("values") or {}) if usable else {}

    def kept(self, part: str, digest: str) -> bool:
        """The earlier result of the run has this part, measured with these settings."""
        old = (self.earlier.get("parts") or {}).get(part) or {}
        if old.get("status") == "ok" and old.get("settings_hash") == digest:
            self.record[part] = old
            return True
        return False

    def get(self, part: str, settings: dict, compute: Callable[[], dict], earlier: Callable[[dict], dict],
            cache_settings: dict | None = None, from_cache: Callable[[dict], dict | None] | None = None) -> dict | None:
        """The part's values (`earlier` picks them from the run's earlier values); None when it failed.
        The shared cache keys the part by `cache_settings` (default: `settings`), and `from_cache` takes
        this run's values out of a cached entry, or None when it cannot (perplexity: the first N windows
        of an entry of more)."""
        digest = settings_hash(settings)
        if self.kept(part, digest):
            return earlier(self.earlier)
        cache, what = self.ctx.results_cache, f"{self.measurement}.{part}"
        cache_digest = digest if cache_settings is None else settings_hash(cache_settings)
        hit = cache.get(what, self.model, cache_digest, from_cache) if cache else None
        if hit:
            self.record[part] = {"status": "ok", "reason": None, "settings_hash": digest, "reused_from": hit["origin"]}
            return hit["values"]
        started, t0 = now(), time.perf_counter()
        values = (self.attempt([part], {part: digest}, lambda: {part: compute()}) or {}).get(part)
        if values is not None and cache:  # a miss: any entry there had less (a wider one is never replaced)
            cache.put(what, self.model, cache_digest, values, origin(self.ctx, started, time.perf_counter() - t0))
        return values

    def attempt(self, parts: list[str], digests: dict[str, str], compute: Callable):
        """compute() of several parts at once; a failure is recorded for each, with its reason (bad
        input still stops the run)."""
        try:
            values = compute()
        except (KeyboardInterrupt, LacoError):
            raise
        except Exception as exc:
            for part in parts:
                self.record[part] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}",
                                     "settings_hash": digests[part]}
            return None
        for part in parts:
            self.record[part] = {"status": "ok", "reason": None, "settings_hash": digests[part]}
        return values

    def outcome(self, values: dict) -> Outcome:
        values["parts"] = self.record
        failed = failed_parts(values)
        reason = "; ".join(f"{part} failed: {why}" for part, why in failed.items()) or None
        return Outcome("failed" if failed and len(failed) == len(self.record) else "ok", reason, values)
