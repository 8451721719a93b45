"""Throughput in tokens/s, engine `hf` (transformers generate); engine `vllm` is `bench.vllm.measure`.

The vLLM benchmark habit: a fixed batch of random prompts of `input_len` tokens, exactly
`output_len` new tokens each (EOS ignored: min_new_tokens = max_new_tokens), greedy, untimed
warm-up calls, then timed calls of the generate call alone, each between device syncs. The time
to the first token (the prefill) is stamped inside the same generate call by a streamer, which
generate hands the prompt first and then every new token, so prefill and decode are timed
apart (see `bench.rounds` for the rates and their convention).

`HfTimer` times one batch of one model, the unit `bench.rounds` interleaves across the models
of a run. It keeps its model resident or loads it again for every call (`resident`);
`resident_policy` says which the memory allows. The loop is timed by hand with perf_counter:
pytest-benchmark times test functions, not a CLI measurement.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from bench import rounds as rounds_module
from bench.subject import model_device

MB = 1024 * 1024
RESIDENT_FRACTION = 0.5  # models stay resident when their parameters take at most this share of free memory
WORKLOAD = ("batch_size", "input_len", "output_len", "rounds", "warmup")


def settings(ctx, engine: str = "hf") -> dict:
    t = ctx.profile.throughput
    out = {"engine": engine, "batch_size": t.batch_size, "input_len": t.input_len, "output_len": t.output_len,
           "warmup": t.warmup, "rounds": t.rounds, "resident": t.resident, "dtype": ctx.profile.model.dtype,
           "device": model_device(ctx.dense_load_args()), "seed": ctx.profile.seed}
    if engine == "hf" and out["device"] == "cpu":
        out["torch_threads"] = torch.get_num_threads()
        out["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return out


def random_prompts(vocab_size: int, batch_size: int, input_len: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch_size, input_len), generator=gen)


class _FirstTokenClock:
    """A generate streamer that stamps the moment the first new tokens exist: generate puts the
    prompt first, then the tokens of every step (copied to the CPU, so the device is done)."""

    def __init__(self, device: torch.device):
        self.device, self.calls, self.first = device, 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            sync(self.device)
            self.first = time.perf_counter()

    def end(self) -> None:
        pass


class HfTimer:
    """One model's timed batch, the unit of `bench.rounds`: `time_batch()` runs generate once on
    the fixed random prompt batch (greedy, exactly `output_len` new tokens) and returns
    {prefill_s, total_s, input_tokens, output_tokens, batch_size}.

    `resident=True` keeps the model loaded between calls; False loads it before every call and
    releases it after (loading is not timed), for runs whose models do not fit in memory together."""

    def __init__(self, subject, settings: dict, resident: bool = True):
        self.label, self.subject, self.settings, self.resident = subject.key, subject, settings, resident
        self.batch_size = settings["batch_size"]

    def time_batch(self) -> dict:
        model, tokenizer = self.subject.model_and_tokenizer()
        try:
            return time_generate(model, tokenizer, self.settings)
        finally:
            if not self.resident:
                self.subject.release()


@torch.no_grad()
def time_generate(model, tokenizer, s: dict) -> dict:
    device = next(model.parameters()).device
    ids = random_prompts(model.config.vocab_size, s["batch_size"], s["input_len"], s["seed"]).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    clock = _FirstTokenClock(device)
    sync(device)
    start = time.perf_counter()
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=s["output_len"],
                         min_new_tokens=s["output_len"], do_sample=False, pad_token_id=pad, streamer=clock)
    sync(device)
    total = time.perf_counter() - start
    if out.shape[1] != s["input_len"] + s["output_len"]:
        raise RuntimeError(f"generate stopped early: {out.shape[1] - s['input_len']} of {s['output_len']} new tokens")
    return {"prefill_s": clock.first - start, "total_s": total, "input_tokens": s["batch_size"] * s["input_len"],
            "output_tokens": s["batch_size"] * s["output_len"], "batch_size": s["batch_size"]}


def resident_policy(param_mb: list[float], free_mb: float | None, fraction: float = RESIDENT_FRACTION) -> dict:
    """Keep every model of the phase resident when their parameters together take at most
    `fraction` of the free memory (the rest is for activations, the KV cache and the interpreter);
    else reload each model for each of its calls."""
    need = sum(param_mb)
    if free_mb is None:
        return {"resident": False, "reason": "free memory unknown: each model reloaded per round", "param_mb": need}
    resident = need <= fraction * free_mb
    relation = "<=" if resident else ">"
    return {"resident": resident, "param_mb": need, "free_mb": free_mb, "fraction": fraction,
            "reason": f"parameters of all models {need:.0f} MB {relation} {fraction:g} x free {free_mb:.0f} MB: "
                      + ("models resident" if resident else "each model reloaded per round")}


def free_memory_mb(device: str) -> float | None:
    """Free memory where the models live: CUDA's free bytes over all GPUs, else MemAvailable."""
    if device == "cuda" and torch.cuda.is_available():
        return sum(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())) / MB
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class HfTiming:
    """The HF phase (bench.rounds.measure_phase): every model of the run in interleaved rounds,
    resident when the memory allows (`resident = "auto"`) or as the profile says."""

    def __init__(self, settings: dict):
        self.settings, self.rounds, self.warmup = settings, settings["rounds"], settings["warmup"]
        self.policy: dict = {}

    @contextmanager
    def timers(self, subjects: list):
        self.policy = resident_choice(subjects, self.settings)
        yield [HfTimer(subject, self.settings, self.policy["resident"]) for subject in subjects], {}

    def values(self, timer: HfTimer, done: dict) -> dict:
        s = self.settings
        return {"engine": s["engine"], **{k: s[k] for k in WORKLOAD}, "dtype": s["dtype"], "resident": self.policy["resident"],
                "interleaved_with": done["labels"], "convention": rounds_module.CONVENTION,
                **rounds_module.throughput_of(timer, done), "resident_reason": self.policy["reason"], "order": done["order"]}


def timing(settings: dict, ctx) -> HfTiming:
    return HfTiming(settings)


def resident_choice(subjects: list, settings: dict) -> dict:
    """`resident_policy` for the models of a phase, unless the profile says."""
    if settings["resident"] != "auto":
        return {"resident": bool(settings["resident"]), "reason": "as the profile says"}
    bytes_per = 2 if settings["dtype"] in ("float16", "bfloat16") else 4
    return resident_policy([parameter_count(s) * bytes_per / MB for s in subjects], free_memory_mb(settings["device"]))


def parameter_count(subject) -> int:
    """Parameters of a model from its record; the dense count from any pruned model's `before`."""
    params = (subject.record or {}).get("parameters") or {}
    if "after" in params:
        return params["after"]
    model, _ = subject.model_and_tokenizer()
    return sum(p.numel() for p in model.parameters())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
