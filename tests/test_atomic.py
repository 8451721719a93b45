"""laco.atomic, the one place the project's kill-safety promise rests on: a file or folder is either as
it was or complete, never torn, and what a killed writer leaves is a temporary that
`clean_temporaries` recognises and removes. Kills are real: a child process SIGKILLs itself at the
moment named (no cleanup handler, no `finally` runs), as an operator or the OOM killer would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from laco import atomic

ROOT = Path(__file__).resolve().parents[1]


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- files ---------------------------------------------------------------------------------------------

def test_write_bytes_puts_the_whole_file_in_place_readable_by_all(tmp_path):
    target = tmp_path / "sub" / "result.bin"
    assert atomic.write_bytes(target, b"\x00\x01" * 1000) == target
    assert target.read_bytes() == b"\x00\x01" * 1000
    assert target.stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600
    atomic.write_text(target, "second")
    assert target.read_text() == "second" and listing(target.parent) == ["result.bin"]


def test_write_json_is_indented_or_compact_with_a_final_newline(tmp_path):
    atomic.write_json(tmp_path / "a.json", {"x": [1, 2]})
    atomic.write_json(tmp_path / "b.json", {"x": [1, 2]}, compact=True)
    assert (tmp_path / "a.json").read_text() == '{\n "x": [\n  1,\n  2\n ]\n}\n'
    assert (tmp_path / "b.json").read_text() == '{"x":[1,2]}\n'


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic.write_text(target, "old")

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        atomic.write_text(target, "new")
    assert target.read_text() == "old" and listing(tmp_path) == ["result.json"]


# -- folders -------------------------------------------------------------------------------------------

def test_a_folder_appears_only_when_its_block_ends(tmp_path):
    target = tmp_path / "out"
    with atomic.folder(target) as tmp:
        (tmp / "weights").write_text("w")
        assert not target.exists() and atomic.is_temporary(tmp) and tmp.parent == tmp_path
    assert listing(target) == ["weights"] and listing(tmp_path) == ["out"]
    assert target.stat().st_mode & 0o777 == 0o755  # not mkdtemp's private 0700


def test_an_exception_in_the_block_leaves_the_target_as_it_was(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic.folder(target) as tmp:
            (tmp / "half").write_text("h")
            raise RuntimeError("failed half-way")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("if_exists,kept", [("replace", "new"), ("keep", "old")])
def test_an_existing_folder_is_replaced_or_kept(tmp_path, if_exists, kept):
    target = tmp_path / "out"
    target.mkdir()
    (target / "which").write_text("old")
    with atomic.folder(target, if_exists=if_exists) as tmp:
        (tmp / "which").write_text("new")
    assert (target / "which").read_text() == kept and listing(tmp_path) == ["out"]


def test_an_existing_folder_is_refused_by_default(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(FileExistsError):
        with atomic.folder(tmp_path / "out") as tmp:
            (tmp / "x").write_text("x")
    assert listing(tmp_path) == ["out"] and listing(tmp_path / "out") == []


def test_two_writers_of_one_cache_entry_the_first_in_wins(tmp_path):
    target = tmp_path / "entry"
    with atomic.folder(target, if_exists="keep") as first:
        with atomic.folder(target, if_exists="keep") as second:  # started later, finishes first
            (second / "by").write_text("second")
        (first / "by").write_text("first")
    assert (target / "by").read_text() == "second" and listing(tmp_path) == ["entry"]


# -- temporaries -----------------------------------------------------------------------------------------

def test_only_the_names_the_helper_gives_count_as_temporaries(tmp_path):
    names = [".a.json.x1y2.tmp", ".out.tmp-k3j4", ".out.old-k3j4", ".hidden", "a.tmp", ".config", "out"]
    for name in names:
        (tmp_path / name).mkdir()
    assert [n for n in names if atomic.is_temporary(tmp_path / n)] == names[:3]
    assert [p.name for p in atomic.temporaries_of(tmp_path / "out")] == [".out.old-k3j4", ".out.tmp-k3j4"]
    assert [p.name for p in atomic.remove_temporaries_of(tmp_path / "out")] == [".out.old-k3j4", ".out.tmp-k3j4"]
    assert listing(tmp_path) == sorted([".a.json.x1y2.tmp", ".hidden", "a.tmp", ".config", "out"])


# -- real kills -------------------------------------------------------------------------------------------

def killed_while_writing(tmp_path: Path, body: str) -> subprocess.CompletedProcess:
    """Run `body` in a child whose first fsync (the data is written, not yet renamed into place) or
    `die()` SIGKILLs it."""
    script = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        from laco import atomic
        def die(*args):
            os.kill(os.getpid(), signal.SIGKILL)
        os.fsync = die
        here = Path(sys.argv[1])
    """) + textwrap.dedent(body)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=120)


def test_a_file_write_killed_before_its_rename_leaves_the_old_file_and_one_temporary(tmp_path):
    target = tmp_path / "results" / "memory.json"
    atomic.write_json(target, {"value": "old"})
    proc = killed_while_writing(tmp_path, """
        atomic.write_json(here / "results" / "memory.json", {"value": "new" * 100_000})
        print("not killed")
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    assert json.loads(target.read_text()) == {"value": "old"}
    left = atomic.temporaries_of(target)
    assert len(left) == 1 and left[0].name.startswith(".memory.json.") and left[0].name.endswith(".tmp")
    assert left[0].stat().st_size > 300_000  # the new data was written, only the rename is missing
    assert atomic.clean_temporaries(tmp_path) == left
    assert listing(target.parent) == ["memory.json"]


def test_a_folder_write_killed_inside_its_block_leaves_only_a_temporary_folder(tmp_path):
    proc = killed_while_writing(tmp_path, """
        with atomic.folder(here / "weights" / "laco") as tmp:
            (tmp / "model.safetensors").write_bytes(b"w" * 1000)
            die()
    """)
    assert proc.returncode == -signal.SIGKILL, proc.stdout + proc.stderr
    weights = tmp_path / "weights"
    [left] = listing(weights)
    assert left.startswith(".laco.tmp-") and listing(weights / left) == ["model.safetensors"]
    assert not (weights / "laco").exists()
    assert atomic.clean_temporaries(tmp_path) == [weights / left] and listing(weights) == []
