"""The vLLM measurements: throughput_vllm (settings, and its timing for the phase of interleaved
rounds, bench.rounds) and the accuracy backend `vllm` (lm-eval's vllm backend in the worker)."""

from __future__ import annotations

from contextlib import contextmanager

from bench import throughput
from bench.rounds import CONVENTION, measure_phase, throughput_of
from bench.subject import Outcome
from bench.vllm.client import EngineUnavailable, VllmSession, model_job, run_worker, unavailable

WORKLOAD = ("batch_size", "input_len", "output_len", "seed", "device")


def settings(ctx) -> dict:
    # timed runs recompute every prompt (bench.vllm_worker.start_engine): no prefix caching
    return {**throughput.settings(ctx, "vllm"), "prefix_caching": False, "vllm": ctx.vllm_settings()}


class VllmTiming:
    """The vLLM phase: an engine per model kept alive in its worker, timed batches alternating
    between them in interleaved rounds, one at a time. Only the profile's `vllm.models` take part
    (each engine holds its weights and KV cache for the whole phase)."""

    def __init__(self, settings: dict, ctx):
        self.settings, self.ctx = settings, ctx
        self.rounds, self.warmup = settings["rounds"], settings["warmup"]

    @contextmanager
    def timers(self, subjects: list):
        chosen = self.ctx.profile.vllm.models
        sessions: list[VllmSession] = []
        outcomes: dict[str, Outcome] = {}
        try:
            for subject in subjects:
                if chosen is not None and subject.key not in chosen:
                    outcomes[subject.key] = Outcome.not_available("not timed on vLLM: not among this profile's vllm.models")
                    continue
                session = self.session(subject)
                try:
                    session.start()
                except EngineUnavailable as exc:
                    outcomes[subject.key] = Outcome.not_available(str(exc))
                    continue
                sessions.append(session)
            yield sessions, outcomes
        finally:
            for session in sessions:
                session.close()

    def session(self, subject) -> VllmSession:
        workload = {k: self.settings[k] for k in WORKLOAD} | {"warmup": 0}  # the rounds warm up, interleaved
        session = VllmSession(self.settings["vllm"], subject.folder or "", subject.record, workload,
                              self.ctx.store.root / "logs" / f"{subject.key}-throughput_vllm.log",
                              self.ctx.profile.vllm.timeout_s)
        session.label = subject.key
        return session

    def values(self, session: VllmSession, done: dict) -> dict:
        s = self.settings
        return {"engine": "vllm", "vllm_version": s["vllm"]["version"], "prefix_caching": False,
                **{k: s[k] for k in throughput.WORKLOAD}, "resident": True, "interleaved_with": done["labels"],
                "convention": CONVENTION, "order": done["order"], **throughput_of(session, done),
                "load_seconds": session.load_seconds, "dtype": session.dtype}


def timing(settings: dict, ctx) -> VllmTiming:
    return VllmTiming(settings, ctx)


def measure(subject, settings: dict, ctx) -> Outcome:
    """One model alone, its own rounds (the runner times every model of the run in one phase)."""
    reason = unavailable(settings["vllm"], subject.record, subject.folder)
    if reason:
        return Outcome.not_available(reason)
    return measure_phase(VllmTiming(settings, ctx), [subject])[subject.key]


def run_accuracy(subject, tasks: dict, common: dict, settings: dict, ctx) -> dict | Outcome:
    v = settings["vllm"]
    try:
        job = model_job("accuracy", v, subject.record, subject.folder, tasks=tasks, lm_eval=common,
                        device=settings["device"])
    except EngineUnavailable as exc:
        return Outcome.not_available(str(exc))
    result = run_worker(v, job, ctx.store.root / "logs" / f"{subject.key}-accuracy_vllm.log", ctx.profile.vllm.timeout_s)
    if isinstance(result, str):
        return Outcome.not_available(f"lm-eval's vllm backend could not run this model: {result}")
    return result
