"""The worker's side from the bench: `bench.vllm_worker` run with the vLLM environment's python.

One-shot jobs (`run_worker`: lm-eval's vllm backend, `greedy` continuations) run a worker to its
end; a `VllmSession` keeps one model's engine alive in its worker, so a caller can alternate timed
batches between models (interleaved rounds). Every worker runs in a session of its own, so a
timeout stops its whole process group (vLLM's engine processes with it). Results and replies are
lines starting with "LACO_VLLM " among vLLM's log lines.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import NoReturn

from bench.vllm.environment import PYTHON_ENV, last_error, project_only_path
from laco.pruners import vllm_overrides_for

RESULT_PREFIX = "LACO_VLLM "
WORKLOAD_KEYS = ("batch_size", "input_len", "output_len", "seed", "device")


class EngineUnavailable(RuntimeError):
    """vLLM cannot load or run the model; the message is one line saying why."""


def unavailable(v: dict, record: dict, folder: str | None) -> str | None:
    """Why vLLM cannot serve this model (None when it can be tried)."""
    if not v["python"]:
        return (f"no vLLM environment: set {PYTHON_ENV} to the python of an environment with vllm "
                "(`tox -e vllm` builds one at .tox/vllm)")
    if v["problem"]:
        return v["problem"]
    loadable = record.get("loadable") or {}
    if loadable.get("vllm") is False:
        return f"the pruner marks this model as not loadable by vLLM: {loadable.get('reason')}"
    if not folder:
        return "no weights folder to hand to vLLM"
    return None


def hf_overrides(record: dict, folder: str | Path) -> dict | None:
    """What vLLM must be told beyond the saved config (the pruner's own `vllm_overrides`): None for a
    stock-shaped output. A reshaped output whose pruner declares nothing raises EngineUnavailable."""
    overrides = vllm_overrides_for(record, folder)
    loader = record.get("loader", "transformers")
    if overrides is None and loader != "transformers":
        raise EngineUnavailable(f"no vLLM architecture serves outputs of the loader {loader}")
    return overrides


def model_job(task: str, v: dict, record: dict, folder: str, **fields) -> dict:
    """A worker job for the model in `folder`: raises EngineUnavailable when vLLM cannot serve it."""
    reason = unavailable(v, record, folder)
    if reason:
        raise EngineUnavailable(reason)
    return {"task": task, "model": folder, "vllm": v, "hf_overrides": hf_overrides(record, folder), **fields}


def run_worker(v: dict, job: dict, log: Path, timeout_s: float) -> dict | str:
    """Run the worker; its result dict, or a one-line reason why there is none (log kept)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="laco-vllm-path-") as path, open(log, "w", encoding="utf-8") as out:
        proc = start_worker(v, job, Path(path), stdout=out)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            stop(proc)
            return f"timed out after {timeout_s:.0f} s (log: {log})"
    text = log.read_text(encoding="utf-8", errors="replace")
    results = [line for line in text.splitlines() if line.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not results:
        return f"{last_error(text)} (exit {proc.returncode}; log: {log})"
    return json.loads(results[-1].removeprefix(RESULT_PREFIX))


def start_worker(v: dict, job: dict, path: Path, **popen) -> subprocess.Popen:
    """Start `bench.vllm_worker` on `job` with the vLLM environment's python; `path` (an empty
    folder) becomes its PYTHONPATH. The caller's working folder is kept, so relative model and
    run paths mean what they say."""
    env = {**os.environ, "PYTHONPATH": str(project_only_path(path)), "TOKENIZERS_PARALLELISM": "false",
           "VLLM_ENABLE_V1_MULTIPROCESSING": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "0")}
    return subprocess.Popen([v["python"], "-m", "bench.vllm_worker", json.dumps(job)], stderr=subprocess.STDOUT,
                            env=env, start_new_session=True, **popen)


def greedy(v: dict, folder: str, record: dict, prompts: list[list[int]], new_tokens: int, log: Path,
           timeout_s: float, device: str = "cpu") -> list[dict]:
    """vLLM's greedy continuation of each prompt (token ids), EOS masked for `new_tokens` tokens:
    per prompt {tokens, prompt_logprobs (None first), top2 [(token, logprob), (token, logprob)] per
    new token}. Raises EngineUnavailable when vLLM cannot serve the model."""
    job = model_job("greedy", v, record, folder, prompts=prompts, new_tokens=new_tokens, device=device)
    result = run_worker(v, job, log, timeout_s)
    if isinstance(result, str):
        raise EngineUnavailable(result)
    return result["outputs"]


class VllmSession:
    """One model's vLLM engine, alive in its worker between timed batches.

    `workload` = {batch_size, input_len, output_len, seed, device, warmup (untimed generates in
    `start`, default 1)}. `start` loads the model (EngineUnavailable with the reason when vLLM
    cannot); each `time_batch` times the fixed batch once: `prefill_s` (a generate of one token,
    the time to first token), `total_s` (the full generate of output_len tokens, EOS ignored),
    `input_tokens`, `output_tokens` (batch totals). Requests and replies are JSON lines over the
    worker's stdin and stdout (vLLM's log lines go to `log`); every request waits at most
    `timeout_s`. One batch runs at a time: the caller alternates."""

    def __init__(self, vllm_settings: dict, model_folder: str, record: dict, workload: dict, log: Path,
                 timeout_s: float):
        self.v, self.folder, self.record, self.workload = vllm_settings, str(model_folder), record, workload
        self.log, self.timeout_s = Path(log), timeout_s
        self.label = f"vllm {vllm_settings.get('version') or '?'}: {Path(model_folder).name}"
        self.batch_size = workload.get("batch_size")
        self.load_seconds: float | None = None
        self.dtype: str | None = None  # the dtype the engine runs in, as the worker reports it
        self._proc: subprocess.Popen | None = None
        self._path: tempfile.TemporaryDirectory | None = None
        self._replies: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        job = model_job("serve", self.v, self.record, self.folder, **{k: self.workload[k] for k in WORKLOAD_KEYS},
                        warmup=self.workload.get("warmup", 1))
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._path = tempfile.TemporaryDirectory(prefix="laco-vllm-path-")
        self._proc = start_worker(self.v, job, Path(self._path.name), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._reader.start()
        ready = self._reply("start")
        self.load_seconds, self.dtype = ready["load_seconds"], ready.get("dtype")

    @property
    def pid(self) -> int | None:
        """The worker's process id (also its process group's), None before start and after close."""
        return self._proc.pid if self._proc is not None else None

    def time_batch(self) -> dict:
        self._send({"op": "time_batch"})
        reply = self._reply("time_batch")
        return {k: reply[k] for k in ("prefill_s", "total_s", "input_tokens", "output_tokens")}

    def close(self) -> None:
        """Stop the worker's process group. Not a graceful shutdown: vLLM's own takes ~10 s waiting
        on its engine process, and an engine that only timed batches has nothing to keep."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop(proc)
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None
        if self._path is not None:
            self._path.cleanup()
            self._path = None

    def __enter__(self) -> VllmSession:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read(self, stream) -> None:
        """Copy the worker's output to the log; hand replies to the caller; None at its end."""
        with stream, open(self.log, "w", encoding="utf-8") as out:
            for line in stream:
                out.write(line)
                out.flush()
                if line.startswith(RESULT_PREFIX):
                    self._replies.put(json.loads(line.removeprefix(RESULT_PREFIX)))
        self._replies.put(None)

    def _send(self, request: dict) -> None:
        if self._proc is None:
            raise EngineUnavailable(f"{self.label}: the session is not started")
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
        except OSError as exc:
            self._fail(f"the worker stopped taking requests ({exc})")

    def _reply(self, what: str) -> dict:
        try:
            reply = self._replies.get(timeout=self.timeout_s)
        except queue.Empty:
            self._fail(f"{what} timed out after {self.timeout_s:.0f} s")
        if reply is None:
            code = self._proc.wait()
            self._fail(f"{last_error(self.log.read_text(encoding='utf-8', errors='replace'))} (exit {code})")
        if reply["status"] == "error":
            raise EngineUnavailable(f"{what}: {reply['error']} (log: {self.log})")
        return reply

    def _fail(self, reason: str) -> NoReturn:
        self.close()
        raise EngineUnavailable(f"vLLM could not serve {self.folder}: {reason} (log: {self.log})")


def stop(proc: subprocess.Popen, grace_s: float = 10) -> None:
    """Stop a worker's whole process group, and wait until the group is gone (its orphans are
    reaped by init a moment after the kill)."""
    deadline = time.monotonic() + grace_s
    while True:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        if proc.poll() is None:
            proc.wait()
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    proc.wait()
    if proc.stdin is not None:
        with contextlib.suppress(OSError):  # a request still buffered for the dead worker
            proc.stdin.close()
