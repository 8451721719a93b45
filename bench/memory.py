"""Memory in MB: parameter and buffer bytes, and the peak of a fixed forward + generate workload.

The workload runs in a fresh Python process, so the peak belongs to this model alone and not to
whatever the bench process held before. On CUDA the peak is `torch.cuda.max_memory_allocated`
(weights included, the workload's activations and KV cache on top); on CPU it is the peak RSS
of that process (the interpreter, torch and the weights included; `rss_after_load_mb` and
`rss_before_load_mb` let a reader take the baseline apart). The result says which.

Run as a module, this file is the worker: `python -m bench.memory '<json>'`.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

from bench.subject import Outcome, model_device

MB = 1024 * 1024
RESULT_PREFIX = "LACO_MEMORY "


def settings(ctx) -> dict:
    m = ctx.profile["memory"]
    return {"workload": "forward(prompt) + generate(new_tokens, greedy, EOS ignored)",
            "prompt_len": m["prompt_len"], "new_tokens": m["new_tokens"], "batch_size": m["batch_size"],
            "dtype": ctx.profile["model"]["dtype"], "device": model_device(ctx.dense_load_args()),
            "seed": ctx.profile["seed"]}


def measure(subject, settings: dict, ctx) -> Outcome:
    job = {"load": subject.load_args, **{k: settings[k] for k in ("prompt_len", "new_tokens", "batch_size", "seed")}}
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    # the caller's working folder is kept: relative model and run paths must resolve as in the bench
    proc = subprocess.run([sys.executable, "-m", "bench.memory", json.dumps(job)], capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise RuntimeError(f"memory worker failed (exit {proc.returncode}): {' | '.join(tail)}")
    return Outcome("ok", None, json.loads(lines[-1].removeprefix(RESULT_PREFIX)))


def rss_now_mb() -> float:
    """Resident set size of this process now (Linux /proc; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return 0.0


def peak_rss_mb() -> float:
    """Peak RSS of this process. On Linux VmHWM, the high-water mark of this program's memory map:
    getrusage's ru_maxrss survives exec and so counts the parent's pages copied at fork (a bench
    holding two models made a 0.9 GB worker read 2.5 GB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / MB if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB elsewhere


def tensor_mb(tensors) -> float:
    return sum(t.numel() * t.element_size() for t in tensors) / MB


def worker(job: dict) -> dict:
    import torch

    from bench.subject import load

    before_load = rss_now_mb()
    model, tokenizer = load(job["load"])
    device = next(model.parameters()).device
    values = {"param_mb": tensor_mb(model.parameters()), "buffer_mb": tensor_mb(model.buffers())}
    after_load = rss_now_mb()
    gen = torch.Generator().manual_seed(job["seed"])
    ids = torch.randint(0, model.config.vocab_size, (job["batch_size"], job["prompt_len"]), generator=gen).to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    gpus = range(torch.cuda.device_count()) if device.type == "cuda" else []  # all of them under a device_map
    for gpu in gpus:
        torch.cuda.reset_peak_memory_stats(gpu)
    with torch.no_grad():
        model(input_ids=ids)
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=job["new_tokens"],
                             min_new_tokens=job["new_tokens"], do_sample=False, pad_token_id=pad)
    assert out.shape[1] == job["prompt_len"] + job["new_tokens"], "generate stopped early"
    if gpus:
        torch.cuda.synchronize()
        peak = sum(torch.cuda.max_memory_allocated(gpu) for gpu in gpus)
        values.update(peak_mb=peak / MB, peak_kind="cuda_max_memory_allocated", gpus=len(gpus))
    else:
        values.update(peak_mb=peak_rss_mb(), peak_kind="subprocess_peak_rss")
    values.update(rss_before_load_mb=before_load, rss_after_load_mb=after_load)
    return values


if __name__ == "__main__":
    print(RESULT_PREFIX + json.dumps(worker(json.loads(sys.argv[1]))), flush=True)
