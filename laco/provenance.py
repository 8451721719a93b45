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

from laco.atomic import write_json
from laco.cache import cache_root

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
        info["bf16_matmul"] = bf16_matmul() or "none"
    return info


# Native bf16 matrix products, fastest first: AMX tiles, then AVX512-BF16's dot products. Without
# either, torch emulates bf16 through float32 and a bf16 model runs slower than a float32 one.
BF16_MATMUL_FLAGS = {"amx_bf16": ("amx_bf16", "amx_tile"), "avx512_bf16": ("avx512_bf16",)}


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux reports them (/proc/cpuinfo); empty elsewhere."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def bf16_matmul(flags: set[str] | None = None) -> str | None:
    """Which native bf16 matmul the CPU has (by `flags`, default this CPU's): "amx_bf16", "avx512_bf16",
    or None for neither."""
    flags = cpu_flags() if flags is None else flags
    return next((name for name, needed in BF16_MATMUL_FLAGS.items() if set(needed) <= flags), None)


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=256)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    """The digest, from the on-disk cache when this (path, size, mtime) was hashed before."""
    key = f"{path}|{size}|{mtime_ns}"
    cache = _digest_cache_file()
    known = _read_digest_cache(cache)
    if key in known:
        return known[key]
    digest = _sha256_of(path)
    if size >= 1 << 20:  # small files hash faster than the cache is read back
        _remember_digest(cache, key, digest)
    return digest


def _digest_cache_file() -> Path:
    return cache_root() / "digests.json"


def _read_digest_cache(cache: Path) -> dict:
    try:
        return json.loads(cache.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _remember_digest(cache: Path, key: str, digest: str) -> None:
    """Add one entry; two processes adding at once may lose one entry, which costs only a re-hash."""
    try:
        known = _read_digest_cache(cache)
        known[key] = digest
        write_json(cache, known, indent=None)
    except OSError:  # a read-only cache costs only the re-hash next time
        pass


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file, remembered on disk per (path, size, mtime): weights are hashed once."""
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
        # dirty only where the measuring code differs from the commit: an edit elsewhere (the suites,
        # the tests, the docs) changes no measurement, and the source digest names the code exactly
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", *(f":/{p}" for p in CODE_PACKAGES)],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty else "")


def fingerprint(obj) -> str:
    """A short stable hash of a JSON-able object (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# The packages whose code decides a measured number: the pruning core and the bench. The suites only
# read results, so a change there re-judges a run without re-measuring it.
CODE_PACKAGES = ("laco", "bench")


@lru_cache(maxsize=1)
def code_identity() -> dict[str, str | None]:
    """What code measured a result: the laco-bench version, the git commit of the checkout (None when
    installed), and a digest of the source of the packages that measure (every .py, .toml and .txt
    file under them), which also tells uncommitted edits apart."""
    import importlib

    digest = hashlib.sha256()
    for package in CODE_PACKAGES:
        root = Path(importlib.import_module(package).__file__).resolve().parent
        for file in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".toml", ".txt") and p.is_file()):
            if "__pycache__" in file.parts:
                continue
            digest.update(f"{package}/{file.relative_to(root).as_posix()}".encode())
            digest.update(file.read_bytes())
    from laco import __version__

    return {"version": __version__, "commit": git_commit(), "source_digest": digest.hexdigest()[:16]}
