"""The shape the code keeps (README, "How the code must be"): one atomic-write helper, no import cycle
between the project's modules, files of at most 450 lines and functions of at most 50."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("laco", "bench", "suites")
ATOMIC_HELPER = ROOT / "laco" / "atomic.py"
MAX_FILE_LINES = 450
MAX_FUNCTION_LINES = 50

TEMPORARIES = ("mkstemp", "mkdtemp", "NamedTemporaryFile")


def sources() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def hand_rolled_writes(text: str) -> list[int]:
    """Lines that make a temporary file or folder to rename into place, or rename one: `os.replace`,
    `os.rename`, `shutil.move`, a path's `.replace(target)` / `.rename(target)` (one argument: a
    string's replace takes two), mkstemp, mkdtemp, NamedTemporaryFile."""
    found = []
    for node in ast.walk(ast.parse(text)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        owner = getattr(func.value, "id", None) if isinstance(func, ast.Attribute) else None
        renames = name in ("replace", "rename") and (owner == "os" or (
            isinstance(func, ast.Attribute) and len(node.args) == 1 and not node.keywords))
        if name in TEMPORARIES or renames or (owner, name) == ("shutil", "move"):
            found.append(node.lineno)
    return found


def test_no_temporary_file_and_rename_outside_the_atomic_helper():
    found = []
    for path in sources():
        if path == ATOMIC_HELPER:
            continue
        lines = path.read_text(encoding="utf-8").splitlines()
        found += [f"{path.relative_to(ROOT)}:{n}: {lines[n - 1].strip()}" for n in hand_rolled_writes("\n".join(lines))]
    assert not found, "write through laco.atomic instead:\n" + "\n".join(found)


def test_the_search_finds_each_way_of_hand_rolling_and_no_plain_call():
    caught = ["os.replace(tmp, path)", "tmp.rename(target)", "fd, tmp = tempfile.mkstemp(dir=d)", "tempfile.mkdtemp()",
              "with tempfile.NamedTemporaryFile('w') as f: pass", "os.rename(a, b)", "Path(f.name).replace(path)",
              "(tmp / 'a.md').replace(out / 'a.md')", "shutil.move(a, b)", "from tempfile import mkstemp; mkstemp()"]
    assert [line for line in caught if not hand_rolled_writes(line)] == []
    plain = ["text.replace('a', 'b')", "replace(cfg, T=0.5)", "dataclasses.replace(cfg, T=0.5)", "renamed = 1",
             "frame.rename(columns={'a': 'b'})", "# os.replace(a, b)", "tempfile.TemporaryDirectory()"]
    assert [line for line in plain if hand_rolled_writes(line)] == []


def project_imports(path: Path, known: set[str]) -> set[str]:
    """The project modules `path` imports, at the top or inside a function."""
    here = module_name(path)
    package = here if path.name == "__init__.py" else here.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from a import b` imports the module a.b when b is one, else a name of a
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        found |= {name for name in names if name in known and name != here}
    return found


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in sources()}
    return {name: project_imports(path, set(paths)) for name, path in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_cycle_finder_finds_a_cycle_and_only_one():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_import_walk_sees_function_level_and_from_imports():
    graph = import_graph()
    assert "laco.atomic" in graph["laco.saving"]  # `from laco import LacoError, atomic`: a module
    assert "laco" in graph["laco.saving"]  # and a name of the package
    assert "laco.loading" in graph["laco.pruners"]  # imported inside load_pruned
    assert "laco.cache" in graph["laco.provenance"]


def test_no_import_cycle_between_the_projects_modules():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(group) for group in found)


def lengths() -> tuple[list[str], list[str]]:
    long_files, long_functions = [], []
    for path in sources():
        text = path.read_text(encoding="utf-8")
        where = path.relative_to(ROOT)
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{where}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = node.end_lineno - node.lineno + 1
                if span > MAX_FUNCTION_LINES:
                    long_functions.append(f"{where}:{node.lineno} {node.name}: {span} lines")
    return long_files, long_functions


@pytest.mark.parametrize("kind", ["files", "functions"])
def test_no_file_over_450_lines_and_no_function_over_50(kind):
    long_files, long_functions = lengths()
    found = long_files if kind == "files" else long_functions
    limit = MAX_FILE_LINES if kind == "files" else MAX_FUNCTION_LINES
    assert not found, f"over {limit} lines:\n" + "\n".join(found)
