"""Throughput in tokens/s, engine `hf` (transformers generate); engine `vllm` is `bench.vllm_engine`.

The vLLM benchmark habit: a fixed batch of random prompts of `input_len` tokens, exactly
`output_len` new tokens each (EOS ignored: min_new_tokens = max_new_tokens), greedy, `warmup`
untimed runs, then `repeats` timed runs of the generate call alone; median, min and max of the
input, output and total tokens per second. The loop is timed by hand with perf_counter (after a
device sync): pytest-benchmark times test functions, not a CLI measurement.
"""

from __future__ import annotations

import os
import statistics
import time

import torch

from bench.subject import Outcome, model_device


def settings(ctx, engine: str = "hf") -> dict:
    t = ctx.profile["throughput"]
    out = {"engine": engine, **{k: t[k] for k in ("batch_size", "input_len", "output_len", "warmup", "repeats")},
           "dtype": ctx.profile["model"]["dtype"], "device": model_device(ctx.dense_load_args()),
           "seed": ctx.profile["seed"]}
    if engine == "hf" and out["device"] == "cpu":
        out["torch_threads"] = torch.get_num_threads()
        out["omp_wait_policy"] = os.environ.get("OMP_WAIT_POLICY")
    return out


def random_prompts(vocab_size: int, batch_size: int, input_len: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_size, (batch_size, input_len), generator=gen)


def summarise(seconds: list[float], s: dict) -> dict:
    """The result values from the timed runs' wall times."""
    def spread(tokens: int) -> dict:
        rates = [tokens / t for t in seconds]
        return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}

    b = s["batch_size"]
    return {
        "engine": s["engine"], "batch_size": b, "input_len": s["input_len"], "output_len": s["output_len"],
        "repeats": s["repeats"], "warmup": s["warmup"],
        "input_tokens_per_s": spread(b * s["input_len"]),
        "output_tokens_per_s": spread(b * s["output_len"]),
        "total_tokens_per_s": spread(b * (s["input_len"] + s["output_len"])),
        "seconds": seconds,
    }


@torch.no_grad()
def measure(subject, settings: dict, ctx) -> Outcome:
    model, tokenizer = subject.model_and_tokenizer()
    device = next(model.parameters()).device
    ids = random_prompts(model.config.vocab_size, settings["batch_size"], settings["input_len"], settings["seed"])
    ids = ids.to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=settings["output_len"],
                  min_new_tokens=settings["output_len"], do_sample=False, pad_token_id=pad)

    def generate() -> float:
        sync(device)
        start = time.perf_counter()
        out = model.generate(ids, **kwargs)
        sync(device)
        elapsed = time.perf_counter() - start
        assert out.shape[1] == settings["input_len"] + settings["output_len"], "generate stopped early"
        return elapsed

    for _ in range(settings["warmup"]):
        generate()
    return Outcome("ok", None, summarise([generate() for _ in range(settings["repeats"])], settings))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
