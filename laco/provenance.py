"""Where a result came from: library versions, file hashes, the device, the git commit."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import torch

_LIBRARIES = ("laco-bench", "torch", "transformers", "safetensors", "accelerate", "gguf", "lm_eval", "vllm")


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries a result depends on (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def device_info(device: str | torch.device = "cpu") -> dict[str, str | int]:
    device = torch.device(device)
    info: dict[str, str | int] = {"device": str(device), "torch_threads": torch.get_num_threads()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda or ""
    else:
        info["cpu"] = platform.processor() or platform.machine()
    return info


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime) for this process."""
    st = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def folder_weights_sha256(folder: str | Path) -> str:
    """One hash over the weight files of a model folder (name and content of each, sorted)."""
    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".gguf", ".pt"))
    digest = hashlib.sha256()
    for p in files:
        digest.update(p.name.encode())
        digest.update(file_sha256(p).encode())
    return digest.hexdigest()


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the checkout laco runs from (None outside a git checkout)."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-able object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
