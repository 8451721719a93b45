"""The run folder's disk: where its copies go, how fast it takes them, and the refusal of a run whose
pruned copies it cannot hold (the plan's figures, `bench.plan`)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from laco.memory import format_size

DISK_PROBE_BYTES = 64 << 20


def existing_parent(path: Path) -> Path:
    """`path`, or its nearest parent that exists: the filesystem the run folder is (or will be) on."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def disk_write_rate(folder: Path) -> float | None:
    """GB/s of a short write and fsync in `folder` (removed at once); None where it cannot write."""
    chunk = b"\0" * (1 << 20)
    nbytes = min(DISK_PROBE_BYTES, shutil.disk_usage(folder).free // 8) // len(chunk) * len(chunk)
    if not nbytes:
        return None
    path = folder / f".laco-disk-probe-{os.getpid()}"
    try:
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(nbytes // len(chunk)):
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        return nbytes / (time.perf_counter() - t0) / 1e9
    except OSError:
        return None
    finally:
        path.unlink(missing_ok=True)


def layer_read_rates(model_folder: Path | None, layer_prefix: str, at: Path, dtype) -> dict:
    """GB/s of reading one decoder layer's tensors as a streamed prune does (`laco.stream.shards`): first
    from the disk (its files' pages dropped from the page cache beforehand), then again from the page
    cache. The model's own first layer when its folder is here; else a probe file of DISK_PROBE_BYTES
    in `at` (removed). {} where it cannot read."""
    import torch

    from laco.stream.shards import ShardIndex

    probe = None
    try:
        if model_folder is not None:
            index, source = ShardIndex(model_folder), "the model's first decoder layer"
        else:
            from safetensors.torch import save_file

            probe, source = at / f".laco-read-probe-{os.getpid()}.safetensors", "a probe file in the run folder's disk"
            save_file({f"{layer_prefix}w": torch.ones(DISK_PROBE_BYTES // 2, dtype=torch.bfloat16)}, str(probe))
            index = ShardIndex(probe)
        for file in {index.files[name] for name in index.names_under(layer_prefix)}:
            _drop_cached_pages(file)
        seconds, nbytes = [], 0
        for _ in range(3):  # from the disk, then the faster of two reads from the page cache
            t0 = time.perf_counter()
            tensors = index.read_many(layer_prefix, dtype)
            seconds.append(time.perf_counter() - t0)
            nbytes = sum(t.numel() * t.element_size() for t in tensors.values())  # in the dtype read, as a prune holds them
            del tensors
    except (OSError, KeyError, ValueError):
        return {}
    finally:
        if probe is not None:
            probe.unlink(missing_ok=True)
    return {"read_disk_gbps": nbytes / seconds[0] / 1e9, "read_cached_gbps": nbytes / min(seconds[1:]) / 1e9,
            "read_from": source}


def _drop_cached_pages(file: Path) -> None:
    """Ask the kernel to forget `file`'s clean pages, so the next read comes from the disk (or from what the
    disk's host caches: on a virtual machine that is what a first read meets too)."""
    fd = os.open(file, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def check_disk(plan, out: Path) -> None:
    """Refuse (LacoError) a run whose pruned copies (`plan`, a `bench.plan.Plan`) need more disk than the run
    folder's filesystem has free; weights already in the run folder (a resumed run's) are replaced in place
    and count as free."""
    from laco import LacoError

    weights = Path(out) / "weights"
    kept = sum(f.stat().st_size for f in weights.rglob("*") if f.is_file()) if weights.is_dir() else 0
    need = plan.disk_needed - kept
    build, build_at = plan.build or (0, None)
    if build and existing_parent(build_at).stat().st_dev != Path(plan.disk_at).stat().st_dev:
        free = shutil.disk_usage(existing_parent(build_at)).free
        if build > free:
            raise LacoError(f"this profile's synthetic model needs {format_size(build)} of disk, {format_size(free)} "
                            f"free at {existing_parent(build_at)}")
        build = 0
    if need + build > plan.disk_free:
        what = f"pruned copies and {format_size(build)} for its synthetic model" if build else "pruned copies"
        raise LacoError(f"this profile needs {format_size(need + build)} of disk for {what}, "
                        f"{format_size(plan.disk_free)} free at {plan.disk_at}")
