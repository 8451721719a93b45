"""Atomic writes: every file and folder the project writes is put in place only when it is complete.

The project's kill-safety promise rests on this module alone. A process killed at any point
(SIGKILL, the OOM killer) leaves the target as it was or as it was meant to be, never half-written.
What such a kill leaves beside the target is a temporary whose name says so, and
`clean_temporaries` removes it:

    .NAME.XXXX.tmp      a file being written
    .NAME.tmp-XXXX      a folder being written
    .NAME.old-XXXX      a replaced folder not yet deleted

Written by hand: the standard library renames one file over another atomically (`os.replace`),
but has no write-to-a-temporary-then-rename helper, nor a way to replace a non-empty folder.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

FILE_SUFFIX = ".tmp"
FOLDER_MARK = ".tmp-"
OLD_MARK = ".old-"


def write_bytes(path: str | Path, data: bytes, *, mode: int = 0o644) -> Path:
    """Write `data` to a temporary file beside `path`, flush it to disk, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=FILE_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)  # mkstemp makes it private; what the project writes is for every reader
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str, *, mode: int = 0o644) -> Path:
    return write_bytes(path, text.encode("utf-8"), mode=mode)


def write_json(path: str | Path, obj, *, indent: int | None = 1, compact: bool = False) -> Path:
    """JSON with a final newline; `compact`: one line without spaces (results with long lists)."""
    text = json.dumps(obj, separators=(",", ":"), default=str) if compact else json.dumps(obj, indent=indent, default=str)
    return write_text(path, text + "\n")


IfExists = Literal["error", "replace", "keep"]


@contextmanager
def folder(path: str | Path, *, if_exists: IfExists = "error") -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block ends normally it becomes `path`.

    if_exists: "error" refuses an existing `path` (FileExistsError); "replace" moves the old folder
    aside, puts the new one in and then deletes the old; "keep" leaves an existing `path` as it is
    and drops the new folder (two processes computing the same cache entry: the first one in wins).
    On an exception the temporary folder is removed and `path` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}{FOLDER_MARK}", dir=path.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private
    try:
        yield tmp
        _put_in_place(tmp, path, if_exists)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _put_in_place(tmp: Path, path: Path, if_exists: IfExists) -> None:
    if not path.exists():
        try:
            tmp.rename(path)
            return
        except OSError:  # another writer put it in place between the check and the rename
            if not path.exists():
                raise
    if if_exists == "keep":
        return
    if if_exists == "error":
        raise FileExistsError(f"{path} exists")
    old = path.parent / f".{path.name}{OLD_MARK}{tmp.name.rpartition(FOLDER_MARK)[2]}"
    path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def remove_folder(path: str | Path) -> None:
    """Remove a folder as one step: it is renamed aside first (an .old- temporary, which a kill midway
    leaves for `clean_temporaries`), so no torn folder stays under its name."""
    path = Path(path)
    if not path.exists():
        return
    old = path.parent / f".{path.name}{OLD_MARK}{os.getpid()}"
    path.rename(old)
    shutil.rmtree(old, ignore_errors=True)


def is_temporary(path: Path) -> bool:
    """A name this module gives to what is not yet (or no longer) in place."""
    name = path.name
    return name.startswith(".") and (name.endswith(FILE_SUFFIX) or FOLDER_MARK in name or OLD_MARK in name)


def temporaries_of(path: str | Path) -> list[Path]:
    """What interrupted writes of `path` left beside it."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(p for p in path.parent.glob(f".{path.name}.*") if is_temporary(p))


def clean_temporaries(root: str | Path) -> list[Path]:
    """Remove every temporary left under `root` by a killed writer; returns what was removed."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = sorted((p for p in root.rglob(".*") if is_temporary(p)), key=lambda p: len(p.parts))
    removed = []
    for p in found:
        if any(parent in removed for parent in p.parents):
            continue
        _remove(p)
        removed.append(p)
    return removed


def remove_temporaries_of(path: str | Path) -> list[Path]:
    """Remove what killed writes of `path` left beside it (and nothing of its neighbours)."""
    found = temporaries_of(path)
    for p in found:
        _remove(p)
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
