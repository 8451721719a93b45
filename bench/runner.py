"""A run: measure the dense model, prune with every method of the profile and measure each, then time
the throughput of all of them together in interleaved rounds.

Methods run in profile order, because a method may take its target from an earlier one
(`target = "match:laco"`: the parameter pruning ratio LaCo achieved in this run). Each pruned model
is saved under runs/<ID>/weights/<label>; a resumed run reloads it instead of pruning again, unless
what decides its weights changed (bench.pruned). A model's identity includes the digest of its weight
files, so two models with identical weights are seen as such, and a result is reused only for the
same model, settings and code (bench.store).

Failure leaves nothing stale: a failed prune removes that label's record, weights and results; a
failed measurement replaces the earlier result with a "failed" record. A measurement made of parts
keeps the parts that succeeded (bench.parts). A process killed at any point loses at most the
measurement in flight (bench.store), and the next run cleans up after it.

Results measured once are reused across run folders from the shared result cache
(bench.results_cache): whole results of the per-model measurements in WHOLE_CACHED, the parts of
perplexity and accuracy item by item; never the interleaved timings of the phases. run.json counts
the run's hits and misses.
"""

from __future__ import annotations

import importlib
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from bench.context import RunContext
from bench.dtype import settle_dtype
from bench.parts import cache_model, failed_parts, origin
from bench.posttrained import check_training_text
from bench.profile import PHASED, MethodSettings, Profile, measurements_of
from bench.pruned import model_dtypes, pruned_subject, restore_weights, weights_removed
from bench.results_cache import ResultsCache, cache_folder
from bench.rounds import measure_phase
from bench.store import RunStore, code_key, now, settings_hash
from bench.subject import Outcome, Subject, dense_folder
from laco import LacoError
from laco.atomic import remove_folder
from laco.faults import kill_point
from laco.provenance import device_info, fingerprint, git_commit, library_versions

MODULES = {
    "pruning_time": "bench.pruning_time",
    "memory": "bench.memory",
    "perplexity": "bench.perplexity",
    "accuracy": "bench.accuracy",
    "flops": "bench.flops",
    "throughput_hf": "bench.throughput",
    "throughput_vllm": "bench.vllm.measure",
}
# measured for all models together, in interleaved rounds (bench.rounds), after every model is pruned
WHOLE_CACHED = ("memory", "flops")  # reused whole from the shared cache; perplexity and accuracy by part


def run_profile(profile_name: str, profile: Profile, out: str | Path, *, data_dir: str | None = None,
                progress: bool = True, on_result: Callable[[dict], None] | None = None,
                reuse_other_code: bool = False, results_cache: bool = True) -> list[str]:
    """Run (or resume) a profile into `out`; returns the measurements that failed (empty: all done).

    `on_result` is called with every result right after it is written (tests use it to stop a run
    after its first result). `results_cache`: read and fill the shared result cache."""
    cache = ResultsCache(cache_folder(), code_key(), reuse_other_code=reuse_other_code) if results_cache else None
    ctx = RunContext(profile, RunStore(out, reuse_other_code=reuse_other_code), data_dir, progress, cache)
    source = check_up_front(ctx)
    ctx.store.start(profile_name, profile.model_dump(), data_dir=data_dir, seed=profile.seed, device=profile.model.device)
    try:
        with Run(ctx, on_result) as run:
            subjects = [run.dense(source)]
            for method in profile.methods:
                subjects += run.pruned(method)
                run.remove_weights_after(method.label)
            for name in PHASED:
                run.phase(name, subjects)
                run.remove_weights_after(name)
    finally:
        ctx.store.count_cache(cache.root if cache else None, cache.counts if cache else {})
    if not run.failures:
        ctx.store.finish()
    return run.failures


def check_up_front(ctx: RunContext):
    """Everything that can be checked before anything is loaded or measured; the dense model's source."""
    from laco.loading import resolve

    settle_dtype(ctx.profile)  # bf16 on a CPU without native bf16 matmul: float32 or refused, as the profile says
    ctx.tasks()
    for calibration in [None, *(m.calibration for m in ctx.profile.methods)]:
        ctx.calibration(calibration)
    for i, method in enumerate(ctx.profile.methods):
        if method.post_train is not None:
            check_training_text(method, f"methods[{i}]", ctx)
    return resolve(ctx.profile.model.spec, revision=ctx.profile.model.revision)


def dense_fingerprint(source_fingerprint: str, dtype: str) -> str:
    return fingerprint({"source_fingerprint": source_fingerprint, "method": "dense", "dtype": dtype})


class Run:
    """The steps of a run, with its progress bar and the failures so far (each "what: why")."""

    def __init__(self, ctx: RunContext, on_result: Callable[[dict], None] | None):
        self.ctx, self.on_result, self.failures = ctx, on_result, []
        self.dense_fp = ""
        names = ctx.profile.measurements
        self.per_model = [n for n in names if n not in PHASED]
        self.total = len(self.per_model) * (1 + len(ctx.profile.methods)) + len(set(names) & set(PHASED))

    def __enter__(self) -> Run:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc="bench", unit="measurement", disable=not self.ctx.progress)
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()

    def dense(self, source) -> Subject:
        """The dense model: recorded, measured, and let go until the phases."""
        m = self.ctx.profile.model
        dense = Subject("dense", "dense", dense_fingerprint(source.fingerprint(), m.dtype), {},
                        self.ctx.dense_load_args(), folder=dense_folder(source))
        self.ctx.store.write_model({"key": "dense", "method": "dense", "fingerprint": dense.fingerprint, "record": {},
                                    "saved": None, "source": source.as_dict(),
                                    "weights_sha256": source.sha256 or source.revision, "point": "dense",
                                    "dtypes": model_dtypes({}, self.ctx)})
        self.dense_fp = dense.fingerprint
        self.measure(dense, self.per_model)
        dense.release()
        return dense

    def pruned(self, method: MethodSettings) -> list[Subject]:
        """One method's pruned model, measured ([]: its pruning failed, which is recorded)."""
        self.bar.set_postfix_str(f"{method.label}: pruning")
        subject = self.prune(method)
        if subject is None:
            self.bar.update(len(self.per_model))
            return []
        self.measure(subject, [n for n in measurements_of(method.label, self.ctx.profile) if n not in PHASED])
        subject.release()
        return [subject]

    def prune(self, method: MethodSettings) -> Subject | None:
        """A method that refuses its target, or a broken pruner, fails alone: the others still run."""
        try:
            return pruned_subject(method, self.ctx, self.dense_fp)
        except KeyboardInterrupt:
            self.ctx.store.forget_model(method.label)  # the half-pruned model must not be reused
            raise
        except Exception as exc:
            self.ctx.store.forget_model(method.label)
            refused = isinstance(exc, LacoError)  # a refusal says why in one line; a bug shows where
            self.failures.append(f"{method.label}/pruning: {exc}" if refused else
                                 f"{method.label}/pruning: {type(exc).__name__}: {exc}")
            self.bar.write(f"FAILED {method.label}/pruning: {exc if refused else traceback.format_exc(limit=-3)}")
            return None

    def measure(self, subject: Subject, names: list[str]) -> None:
        """Each per-model measurement of `subject` not fresh in the store, written as it is done."""
        for name in names:
            self.bar.set_postfix_str(f"{subject.key}: {name}")
            module = importlib.import_module(MODULES[name])
            settings = module.settings(self.ctx)
            digest = settings_hash(settings)
            if not self.ctx.store.is_fresh(subject.key, name, subject.fingerprint, digest):
                self.read_weights_of([subject])
                self.measure_one(subject, name, module, settings, digest)
            self.bar.update()

    def measure_one(self, subject: Subject, name: str, module, settings: dict, digest: str) -> None:
        """One measurement: from the shared cache when it has it whole, else measured; written."""
        cache = self.ctx.results_cache if name in WHOLE_CACHED else None
        model = cache_model(self.ctx, subject) if cache else None
        hit = cache.get(name, model, digest) if cache else None
        started, t0 = now(), time.perf_counter()
        outcome = Outcome("ok", None, hit["values"]) if hit else self.attempt(
            f"{subject.key}/{name}", lambda: module.measure(subject, settings, self.ctx), show=True)
        kill_point("bench:measuring")
        for part, reason in failed_parts(outcome.values).items():
            self.failures.append(f"{subject.key}/{name}/{part}: {reason}")
            self.bar.write(f"FAILED {subject.key}/{name}/{part}: {reason} (its other parts are kept)")
        seconds = time.perf_counter() - t0
        doc = result_doc(subject, name, settings, digest, outcome, self.ctx, started, seconds)
        if hit:
            doc["provenance"]["reused_from"] = hit["origin"]
        self.write(doc)
        if cache and not hit and outcome.status == "ok":
            cache.put(name, model, digest, outcome.values, origin(self.ctx, started, seconds))
        kill_point("bench:written")

    def phase(self, name: str, subjects: list[Subject]) -> None:
        """Time every model taking `name` together (bench.rounds) and write one result per model, all
        carrying the same phase id: the suites pair their rounds. The phase is one unit: unless every
        model's result of it is fresh, all are timed again."""
        if name not in self.ctx.profile.measurements:
            return
        self.bar.set_postfix_str(f"{name}: interleaved rounds")
        taking = [s for s in subjects if name in measurements_of(s.key, self.ctx.profile)]
        if name == "pruning_time":
            taking = [s for s in taking if s.method != "dense"]
        settings = importlib.import_module(MODULES[name]).settings(self.ctx)
        digest = settings_hash(settings)
        if not self.phase_is_fresh(name, taking, digest):
            self.read_weights_of(taking, sources=name == "pruning_time")
            started, t0 = now(), time.perf_counter()
            outcomes = self.attempt(name, lambda: time_phase(name, taking, settings, self.ctx))
            if isinstance(outcomes, Outcome):  # the phase failed: every model's result says why
                outcomes = {s.key: failed(outcomes.reason) for s in taking}
            self.write_phase(name, taking, outcomes, settings, digest, started, time.perf_counter() - t0)
        for subject in taking:
            subject.release()
        self.bar.update()

    def read_weights_of(self, subjects: list[Subject], sources: bool = False) -> None:
        """Make again the weights a step reads that the run removed (`[run] keep_pruned_weights`): of the
        subjects, or (`sources`: pruning again) of the entries they prune further."""
        methods = {m.label: m for m in self.ctx.profile.methods}
        labels = [methods[s.key].source if sources else s.key for s in subjects if s.key in methods]
        for label in [label for label in labels if label and weights_removed(label, self.ctx)]:
            self.bar.set_postfix_str(f"{label}: pruning again (its weights were removed)")
            restore_weights(label, self.ctx)

    def remove_weights_after(self, step: str) -> None:
        """Remove the pruned weights no step after `step` reads (bench.weights_kept)."""
        from bench.weights_kept import removable_after

        for label in removable_after(step, self.ctx.profile):
            remove_folder(self.ctx.store.weights_dir(label))

    def phase_is_fresh(self, name: str, subjects: list[Subject], digest: str) -> bool:
        store = self.ctx.store
        phases = {((store.read_result(s.key, name) or {}).get("values") or {}).get("phase") for s in subjects}
        return all(store.is_fresh(s.key, name, s.fingerprint, digest) for s in subjects) and len(phases) == 1

    def write_phase(self, name: str, subjects: list[Subject], outcomes: dict[str, Outcome], settings: dict,
                    digest: str, started: str, seconds: float) -> None:
        phase = f"{name}-{started}-{uuid.uuid4().hex[:8]}"
        shares = phase_shares(outcomes)
        for subject in subjects:
            outcome = outcomes[subject.key]
            if outcome.status == "ok":
                outcome.values["phase"] = phase
            doc = result_doc(subject, name, settings, digest, outcome, self.ctx, started,
                             seconds * shares.get(subject.key, 0.0))
            doc["provenance"]["phase_seconds"] = seconds
            self.write(doc)

    def attempt(self, what: str, call: Callable, show: bool = False):
        """call(); a broken measurement must not stop the others: its failure is noted, and returned
        as a "failed" outcome that replaces its old result."""
        try:
            return call()
        except (KeyboardInterrupt, LacoError):
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            self.failures.append(f"{what}: {reason}")
            if show:
                self.bar.write(f"FAILED {what}: {reason}\n{traceback.format_exc(limit=-3)}")
            return failed(reason)

    def write(self, doc: dict) -> None:
        self.ctx.store.write_result(doc)
        if self.on_result:
            self.on_result(doc)


def time_phase(name: str, subjects: list[Subject], settings: dict, ctx: RunContext) -> dict[str, Outcome]:
    """Every model's outcome of the phase `name`, timed by its measurement's timing."""
    return measure_phase(importlib.import_module(MODULES[name]).timing(settings, ctx), subjects)


def phase_shares(outcomes: dict) -> dict[str, float]:
    """Each model's share of the phase's wall time, by the time its own timed calls took."""
    spent = {k: sum(r.get("total_s", 0.0) for r in ((o.values.get("per_round") or {}).get("results") or []))
             for k, o in outcomes.items()}
    total = sum(spent.values())
    return {k: v / total for k, v in spent.items()} if total else {k: 1 / len(outcomes) for k in outcomes}


def result_doc(subject: Subject, name: str, settings: dict, digest: str, outcome: Outcome, ctx: RunContext,
               started: str, seconds: float) -> dict:
    return {
        "model": subject.key,
        "model_fingerprint": subject.fingerprint,
        "measurement": name,
        "status": outcome.status,
        "reason": outcome.reason,
        "settings": settings,
        "settings_hash": digest,
        "dtypes": model_dtypes(subject.record, ctx),
        "provenance": {"libraries": library_versions(), "device": device_info(settings.get("device", "cpu")),
                       "seed": ctx.profile.seed, "git_commit": git_commit(), "started": started, "seconds": seconds},
        "values": outcome.values,
    }


def failed(reason: str) -> Outcome:
    return Outcome("failed", reason, {})
