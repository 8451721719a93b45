"""One writer per run folder: `laco bench` and `laco nightly` hold RUN/.lock exclusively while they
write the run; `laco report` holds it shared while it reads the run.

The lock is the kernel's (flock), so it is released when its process ends, however it ends (kill -9,
the OOM killer): a dead holder's lock is free by construction, with no heartbeat to go stale. Beside
it, RUN/lock.json says who holds it (pid, host, start time, command), written through laco.atomic
and removed with the lock file on a clean release. A writer that finds a lock.json whose lock is free
takes it over, and says so in one line. A writer that finds the lock held stops at once (LacoError,
exit 2) naming the holder, unless told to wait.

A report refuses a run being written (or waits with --wait): it would read results half of which
the writer is about to replace. Readers create nothing in the run folder (a committed or read-only
run stays as it is): a run without RUN/.lock has no writer and is read unlocked, so a writer that
starts within the seconds of such a read is not held off. A writer that meets a reader holding the
lock file waits for it, since a read takes seconds.

The standard library's flock rather than the `filelock` package: the judging layer (`laco report`)
is installed without the extras that bring filelock, and it needs a shared lock beside the
writer's exclusive one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from laco import LacoError, atomic

LOCK = ".lock"
HOLDER = "lock.json"
POLL_S = 0.2
READER_WAIT_S = 60.0  # how long a writer waits for readers before it says the folder is busy

_held: dict[Path, int] = {}  # run folders this process holds (any mode): nested commands pass


def describe(run: Path, holder: dict | None = None) -> str:
    """Who holds the lock of `run`, from its lock.json: 'pid 123 on host h since T (laco bench)'."""
    holder = holder or live_writer(run)
    if not holder:
        return "another process (a reader, or a writer starting)"
    return (f"pid {holder.get('pid')} on host {holder.get('host')} since {holder.get('started')}"
            f" ({holder.get('command', 'laco')})")


def read_holder(run: Path) -> dict | None:
    try:
        return json.loads((run / HOLDER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def live_writer(run: Path) -> dict | None:
    """The writer named in lock.json when it may still run: on this host, its pid exists; on another
    host we cannot tell, so it may."""
    holder = read_holder(run)
    if not holder or holder.get("host") != socket.gethostname():
        return holder
    try:
        os.kill(int(holder.get("pid", 0)), 0)
    except ProcessLookupError:
        return None
    except (PermissionError, ValueError, OverflowError):
        pass
    return holder


def _try(fd: int, mode: int) -> bool:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _still_there(path: Path, fd: int) -> bool:
    """The lock file we hold is the one at `path` (a holder removes it on release; whoever opened
    the old one before that must open the new one)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def busy(run: str | Path) -> bool:
    """True when another process holds the lock of `run` (a probe: creates nothing)."""
    run = Path(run)
    if run.resolve() in _held:
        return False
    try:
        fd = os.open(run / LOCK, os.O_RDONLY)
    except OSError:
        return False
    try:
        return not _try(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)


def refuse_if_written(run: str | Path, command: str) -> None:
    """Stop at once when another process holds `run`: before anything slow is imported or loaded."""
    run = Path(run)
    if busy(run) and live_writer(run):
        raise LacoError(f"run folder {run} is in use by {describe(run)}; {command} stops (pass --wait to wait for it)")


@contextmanager
def writing(run: str | Path, command: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold `run` exclusively (creating the folder) for the block; see the module docstring."""
    run = Path(run)
    run.mkdir(parents=True, exist_ok=True)
    key = run.resolve()
    if key in _held:
        yield run
        return
    fd = _acquire(run, command, wait)
    _held[key] = fd
    try:
        _take_over(run, command)
        atomic.write_json(run / HOLDER, {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(),
                                         "command": command})
        yield run
    finally:
        del _held[key]
        for name in (HOLDER, LOCK):  # removed while still held: a waiter re-opens the new file
            (run / name).unlink(missing_ok=True)
        os.close(fd)


def _acquire(run: Path, command: str, wait: bool) -> int:
    path, waited_since = run / LOCK, time.monotonic()
    while True:
        run.mkdir(parents=True, exist_ok=True)  # a holder that failed early may have removed the folder
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        if _try(fd, fcntl.LOCK_EX):
            if _still_there(path, fd):
                return fd
        else:
            if not wait and (live_writer(run) or time.monotonic() - waited_since > READER_WAIT_S):
                os.close(fd)
                raise LacoError(f"run folder {run} is in use by {describe(run)}; {command} stops "
                                "(pass --wait to wait for it)")
        os.close(fd)
        time.sleep(POLL_S)


def _take_over(run: Path, command: str) -> None:
    """A lock.json left by a holder that ended without releasing (killed): say whose lock is taken over."""
    old = read_holder(run)
    if old:
        print(f"{command}: taking over the lock of {run} from {describe(run, old)}: that process is gone",
              file=sys.stderr)


@contextmanager
def reading(run: str | Path, command: str, *, wait: bool = False) -> Iterator[Path]:
    """Hold `run` shared while it is read; a run being written is refused (or waited for)."""
    run = Path(run)
    key = run.resolve()
    if key in _held:
        yield run
        return
    fd = None
    while fd is None:
        try:
            fd = os.open(run / LOCK, os.O_RDONLY)
        except OSError:  # no lock file: nobody writes this run (or it is not a run: the reader says so)
            yield run
            return
        locked = _try(fd, fcntl.LOCK_SH)
        if not (locked and _still_there(run / LOCK, fd)):  # written, or released and removed: look again
            os.close(fd)
            fd = None
            if not locked and not wait:
                raise LacoError(f"run folder {run} is being written by {describe(run)}; {command} does not "
                                "read a run in progress (pass --wait to wait for it)")
            time.sleep(POLL_S if not locked else 0)
    _held[key] = fd
    try:
        yield run
    finally:
        del _held[key]
        os.close(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
