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


def check_disk(plan, out: Path) -> None:
    """Refuse (LacoError) a run whose pruned copies (`plan`, a `bench.plan.Plan`) need more disk than the run
    folder's filesystem has free; weights already in the run folder (a resumed run's) are replaced in place
    and count as free."""
    from laco import LacoError

    weights = Path(out) / "weights"
    kept = sum(f.stat().st_size for f in weights.rglob("*") if f.is_file()) if weights.is_dir() else 0
    need = plan.disk_needed - kept
    if need > plan.disk_free:
        raise LacoError(f"this profile needs {format_size(need)} of disk for pruned copies, "
                        f"{format_size(plan.disk_free)} free at {plan.disk_at}")
