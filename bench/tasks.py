"""Which lm-eval task stands for which benchmark, and how it reads local data.

The table is data: bench/tasks.toml (shipped with the package) maps each task name to the
lm-eval task YAML it includes and to its local files per split; a data dir's own tasks.toml
and a profile's entries extend it (`load_table`). Every task the bench evaluates is declared
by a small generated YAML that `include:`s lm-eval's own task file, so prompts and scoring stay
lm-eval's. With a data dir (layout: ../shared/data/MANIFEST.md) the YAML also points the task
at local JSONL files (`dataset_path: json`, `dataset_kwargs.data_files`) and nulls the splits
that have no local file; without one, lm-eval downloads as usual. The generated folder is the
only task source (`TaskManager(include_defaults=False)`), which keeps start-up fast; a task
outside the table is looked up among lm-eval's built-in tasks (online only).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

import yaml

from laco import LacoError, atomic
from laco.provenance import file_sha256, fingerprint

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

DATA_DIR_ENV = "LACO_DATA_DIR"
SHIPPED_TABLE = Path(__file__).with_name("tasks.toml")
TABLE_FILE = "tasks.toml"  # the name of a data dir's own table
METRICS = ("acc", "acc_norm")  # what bench.accuracy reads from lm-eval's results
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


@dataclass(frozen=True)
class TaskEntry:
    include: str  # lm-eval's task YAML, relative to lm_eval/tasks
    files: dict[str, str] = field(default_factory=dict)  # split -> local file, relative to the data dir
    metric: str = "acc"
    needs_local_data: str | None = None  # why lm-eval's download cannot stand in
    note: str | None = None


@dataclass(frozen=True)
class GroupEntry:
    folder: str  # lm-eval's folder of per-subject YAMLs
    prefix: str
    files: str | None = None  # pattern with {subject} and {split}; None: no local data
    splits: tuple[str, ...] = ("test", "validation", "dev")
    aggregate: tuple[str, ...] = ("acc",)
    metric: str = "acc"
    note: str | None = None


@dataclass(frozen=True)
class PaperBenchmark:
    task: str | None = None
    reason: str | None = None  # why there is no lm-eval task
    note: str | None = None


@dataclass(frozen=True)
class TaskTable:
    tasks: dict[str, TaskEntry]
    groups: dict[str, GroupEntry]
    paper: dict[str, PaperBenchmark]

    def metric(self, name: str) -> str:
        entry = self.tasks.get(name) or self.groups.get(name)
        return entry.metric if entry else "acc"

    def note(self, name: str) -> str | None:
        entry = self.tasks.get(name) or self.groups.get(name)
        return entry.note if entry else None


def parse_table(raw: dict, source: str, *, paper: bool = False) -> TaskTable:
    """A table from TOML data; unknown keys and wrong types are errors naming `source`."""
    sections = {"tasks": TaskEntry, "groups": GroupEntry, **({"paper": PaperBenchmark} if paper else {})}
    unknown = set(raw) - set(sections)
    if unknown:
        raise LacoError(f"{source}: unknown section(s) {sorted(unknown)}; known: {sorted(sections)}")
    parsed = {}
    for section, cls in sections.items():
        entries = raw.get(section, {})
        if not isinstance(entries, dict):
            raise LacoError(f"{source}: [{section}] must be a table of entries")
        parsed[section] = {name: _entry(cls, body, f"{source}: [{section}.{name}]") for name, body in entries.items()}
    return TaskTable(parsed["tasks"], parsed["groups"], parsed.get("paper", {}))


def _entry(cls, body, where: str):
    if not isinstance(body, dict):
        raise LacoError(f"{where} must be a table")
    known = {f.name: f for f in fields(cls)}
    unknown = set(body) - set(known)
    if unknown:
        raise LacoError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(known)}")
    required = [n for n, f in known.items() if f.default is MISSING and f.default_factory is MISSING]
    missing = [n for n in required if n not in body]
    if missing:
        raise LacoError(f"{where}: missing {', '.join(missing)}")
    values = {}
    for key, value in body.items():
        if key == "files" and cls is TaskEntry:
            ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        elif key in ("splits", "aggregate"):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            value = tuple(value)
        else:
            ok = isinstance(value, str)
        if not ok:
            raise LacoError(f"{where}: {key} has the wrong type ({type(value).__name__})")
        values[key] = value
    if values.get("metric", "acc") not in METRICS:
        raise LacoError(f"{where}: metric must be one of {', '.join(METRICS)}")
    if cls is GroupEntry and any(m not in METRICS for m in values.get("aggregate", ())):
        raise LacoError(f"{where}: aggregate metrics must be among {', '.join(METRICS)}")
    return cls(**values)


def read_table_file(path: Path, *, paper: bool = False) -> TaskTable:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise LacoError(f"{path}: not valid TOML: {exc}") from None
    return parse_table(raw, str(path), paper=paper)


SHIPPED = read_table_file(SHIPPED_TABLE, paper=True)


def load_table(data_dir: str | Path | None = None, extra: dict | None = None) -> TaskTable:
    """The shipped table, extended by `<data_dir>/tasks.toml` (if present), then by `extra` (a
    profile's entries, same form); an entry of the same name replaces the earlier one."""
    tables = [SHIPPED]
    if data_dir is not None and (Path(data_dir) / TABLE_FILE).is_file():
        tables.append(read_table_file(Path(data_dir) / TABLE_FILE))
    if extra:
        tables.append(parse_table(extra, "profile task table"))
    return TaskTable({k: v for t in tables for k, v in t.tasks.items()},
                     {k: v for t in tables for k, v in t.groups.items()}, SHIPPED.paper)


# The paper's benchmarks: lm-eval task, or why there is none.
PAPER_BENCHMARKS: dict[str, str | None] = {b: p.task for b, p in SHIPPED.paper.items()}
NOT_IN_LM_EVAL: dict[str, str] = {b: p.reason for b, p in SHIPPED.paper.items() if p.reason}


def default_metric(task: str) -> str:
    return SHIPPED.metric(task)


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@dataclass
class PreparedTasks:
    folder: Path  # the include_path for lm-eval's TaskManager
    available: list[str]
    not_available: dict[str, str]  # requested task or paper benchmark -> why it is not evaluated
    data: dict[str, str | None]  # task -> digest of its local files (None when downloaded)
    needs_builtin_index: bool = False  # a task outside the table: lm-eval's own index is needed
    subtasks: dict[str, list[str]] = field(default_factory=dict)  # group -> its leaf tasks
    metrics: dict[str, str] = field(default_factory=dict)  # available task -> its paper-style metric
    notes: dict[str, str] = field(default_factory=dict)  # requested task -> the table's note


def prepare_tasks(names: list[str], data_dir: str | Path | None, folder: str | Path,
                  extra: dict | None = None) -> PreparedTasks:
    """Write one YAML per task (and per group) into `folder`; report what cannot be evaluated.
    `extra`: a profile's task-table entries (see `load_table`)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table = load_table(data_dir, extra)
    builtin = lm_eval_tasks_dir() if names else None  # a profile with no tasks runs without lm-eval
    data_root = Path(data_dir).resolve() if data_dir else None
    prepared = PreparedTasks(folder, [], {}, {})
    for name in names:
        if name in table.groups:
            reason = _write_group(name, table.groups[name], builtin, data_root, folder, prepared)
        elif name in table.tasks:
            reason = _write_task(name, table.tasks[name], builtin, data_root, folder / f"{name}.yaml", prepared)
        elif data_root is None:
            prepared.needs_builtin_index = True  # any other lm-eval task, downloaded as usual
            reason = None
            prepared.data[name] = None
        else:
            reason = (f"no local data layout known for lm-eval task {name!r} in the data dir (offline run); "
                      f"declare it in {Path(data_dir) / TABLE_FILE}")
        if table.note(name):
            prepared.notes[name] = table.note(name)
        if reason:
            prepared.not_available[name] = reason
        else:
            prepared.available.append(name)
            prepared.metrics[name] = table.metric(name)
    for benchmark, reason in NOT_IN_LM_EVAL.items():
        prepared.not_available[benchmark] = reason
    return prepared


def _write_task(name: str, entry: TaskEntry, builtin: Path, data_root, path: Path, prepared) -> str | None:
    include = builtin / entry.include
    if not include.is_file():
        return f"lm-eval has no task file {entry.include} (under {builtin})"
    config: dict = {"include": str(include), "task": name}
    if data_root is None:
        if entry.needs_local_data:
            return entry.needs_local_data
        prepared.data[name] = None
    else:
        local = {split: data_root / rel for split, rel in entry.files.items()}
        missing = [str(p) for p in local.values() if not p.is_file()]
        if missing or not local:
            return f"local data missing: {', '.join(missing) or 'the table names no local file'}"
        config.update(local_overrides(include, local))
        prepared.data[name] = fingerprint({s: file_sha256(p) for s, p in sorted(local.items())})
    _dump(path, config)
    return None


def local_overrides(include: Path, local: dict[str, Path]) -> dict:
    """Read the task from local JSONL: keep the builtin's splits that have a file, null the rest."""
    from lm_eval.tasks._yaml_loader import load_yaml

    base = load_yaml(include, resolve_func=False)
    overrides = {
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(p) for split, p in local.items()}},
    }
    for key in SPLIT_KEYS:
        if base.get(key) is not None and base[key] not in local:
            overrides[key] = None
    return overrides


def _write_group(name: str, group: GroupEntry, builtin: Path, data_root, folder: Path, prepared) -> str | None:
    if data_root is not None and group.files is None:
        return f"no local data for {name} in the data dir (offline run)"
    subtasks = sorted(p.stem for p in (builtin / group.folder).glob(f"{group.prefix}*.yaml"))
    if not subtasks:
        return f"lm-eval has no {group.prefix}*.yaml under {builtin / group.folder}"
    digests = {}
    for task in subtasks:
        subject = task.removeprefix(group.prefix)
        files = {split: group.files.format(subject=subject, split=split) for split in group.splits} if group.files else {}
        entry = TaskEntry(include=f"{group.folder}/{task}.yaml", files=files)
        reason = _write_task(task, entry, builtin, data_root, folder / name / f"{task}.yaml", prepared)
        if reason:
            return f"{task}: {reason}"
        digests[task] = prepared.data.pop(task)
    metrics = [{"metric": metric, "weight_by_size": True} for metric in group.aggregate]
    _dump(folder / name / f"_{name}.yaml",
          {"group": name, "task": subtasks, "aggregate_metric_list": metrics, "metadata": {"version": 1}})
    prepared.data[name] = fingerprint(digests) if data_root is not None else None
    prepared.subtasks[name] = subtasks
    return None


def _dump(path: Path, config: dict) -> None:
    atomic.write_text(path, yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
