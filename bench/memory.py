"""Memory in MB: parameter and buffer bytes, and the peak of a fixed forward + generate workload.

The workload runs in a fresh Python process, so the peak belongs to this model alone and not to
whatever the bench process held before. The process peak is that process's peak RSS (Linux
VmHWM: the interpreter, torch and the weights included; `rss_after_load_mb` and
`rss_before_load_mb` let a reader take the baseline apart). On CUDA the headline peak is
`torch.cuda.max_memory_allocated` (weights included, the workload's activations and KV cache on
top), reported beside the process peak. `peak_kind` says which one `peak_mb` is.

A measurement that fails is not measured, with the reason: a worker that exits non-zero, is
killed (by the out-of-memory killer, say), runs past `timeout_s` (its whole process group is
stopped) or prints no result gives an "n/a" outcome, never a figure.

Run as a module, this file is the worker: `python -m bench.memory '<json>'`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from bench.subject import Outcome, model_device

MB = 1024 * 1024
RESULT_PREFIX = "LACO_MEMORY "
DEFAULT_TIMEOUT_S = 600
ROOT = Path(__file__).resolve().parent.parent


def settings(ctx) -> dict:
    m = ctx.profile.memory
    return {"workload": "forward(prompt) + generate(new_tokens, greedy, EOS ignored)",
            "prompt_len": m.prompt_len, "new_tokens": m.new_tokens, "batch_size": m.batch_size, "timeout_s": m.timeout_s,
            "dtype": ctx.profile.model.dtype, "device": model_device(ctx.dense_load_args()), "seed": ctx.profile.seed}


def measure(subject, settings: dict, ctx) -> Outcome:
    job = {"load": subject.load_args, **{k: settings[k] for k in ("prompt_len", "new_tokens", "batch_size", "seed")}}
    result = run_worker(worker_command(job), settings.get("timeout_s", DEFAULT_TIMEOUT_S))
    if isinstance(result, str):
        return Outcome.not_available(f"memory not measured: {result}")
    if result.get("peak_mb") is None:
        return Outcome.not_available(f"memory not measured: {result.get('peak_missing', 'no peak reading')}")
    return Outcome("ok", None, result)


def worker_command(job: dict) -> list[str]:
    return [sys.executable, "-m", "bench.memory", json.dumps(job)]


def run_worker(command: list[str], timeout_s: float) -> dict | str:
    """The worker's result, or a one-line reason why there is none. The worker runs in a session
    of its own, so on a timeout its whole process group is killed. The caller's working folder is
    kept: relative model and run paths must resolve as in the bench."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"worker timed out after {timeout_s:g} s (process group killed)"
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode < 0:
        return f"worker killed by {signal.Signals(-proc.returncode).name} (out of memory?): {tail(stderr or stdout)}"
    if proc.returncode != 0:
        return f"worker failed (exit {proc.returncode}): {tail(stderr or stdout)}"
    if not lines:
        return f"worker printed no result: {tail(stderr or stdout)}"
    return json.loads(lines[-1].removeprefix(RESULT_PREFIX))


def tail(text: str, n: int = 3) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-n:]) if lines else "no output"


def rss_now_mb() -> float | None:
    """Resident set size of this process now (Linux /proc; None elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB
    except (OSError, ValueError, IndexError):
        return None


def peak_rss_mb() -> float | None:
    """Peak RSS of this process: Linux VmHWM, the high-water mark of this program's memory map.
    None where there is none. No getrusage fallback: its ru_maxrss survives exec and so counts
    the parent's pages copied at fork (a bench holding two models made a 0.9 GB worker read 2.5 GB)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    return None


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
    if out.shape[1] != job["prompt_len"] + job["new_tokens"]:
        raise RuntimeError("generate stopped early")
    process_peak = peak_rss_mb()
    values.update(process_peak_rss_mb=process_peak, rss_before_load_mb=before_load, rss_after_load_mb=after_load)
    if gpus:
        torch.cuda.synchronize()
        cuda_peak = sum(torch.cuda.max_memory_allocated(gpu) for gpu in gpus) / MB
        values.update(peak_mb=cuda_peak, peak_kind="cuda_max_memory_allocated", cuda_max_memory_allocated_mb=cuda_peak,
                      gpus=len(gpus))
    else:
        values.update(peak_mb=process_peak, peak_kind="subprocess_peak_rss")
        if process_peak is None:
            values["peak_missing"] = "no VmHWM in /proc/self/status on this platform: the process peak cannot be read"
    return values


if __name__ == "__main__":
    print(RESULT_PREFIX + json.dumps(worker(json.loads(sys.argv[1]))), flush=True)
