"""Which lm-eval task stands for which benchmark, and how it reads local data.

Every task the bench evaluates is declared by a small generated YAML that `include:`s
lm-eval's own task file, so prompts and scoring stay lm-eval's. With a data dir (layout:
../shared/data/MANIFEST.md) the YAML also points the task at local JSONL files
(`dataset_path: json`, `dataset_kwargs.data_files`) and nulls the splits that have no local
file; without one, lm-eval downloads as usual. The generated folder is the only task source
(`TaskManager(include_defaults=False)`), which keeps start-up fast; a task outside the table
below is looked up among lm-eval's built-in tasks (online only).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from laco.provenance import file_sha256, fingerprint

DATA_DIR_ENV = "LACO_DATA_DIR"

# The paper (LaCo, Table 1) evaluates with OpenCompass on these benchmarks. lm-eval's prompts
# differ from OpenCompass's, so absolute numbers are not the paper's; ratios to dense are.
PAPER_BENCHMARKS: dict[str, str | None] = {
    "CMNLI": None, "HellaSwag": "hellaswag", "PIQA": "piqa", "CHID": None, "WSC": "wsc273",
    "CommonSenseQA": "commonsense_qa", "BoolQ": "boolq", "MMLU": "mmlu", "CMMLU": "cmmlu",
    "Race-High": "race", "Race-Middle": "race_middle", "XSum": None, "C3": None,
}
NOT_IN_LM_EVAL: dict[str, str] = {
    "CMNLI": "no lm-eval task (CLUE CMNLI); the paper scored it with OpenCompass",
    "CHID": "no lm-eval task (CLUE ChID idiom cloze); the paper scored it with OpenCompass",
    "C3": "no lm-eval task (CLUE C3 reading comprehension); the paper scored it with OpenCompass",
    "XSum": "no lm-eval task of its own (only through the unitxt bridge, which needs the unitxt package "
            "and the hub, and scores differently); the paper scored ROUGE with OpenCompass",
}

# Builtin YAML (relative to lm_eval/tasks), local files per split (relative to the data dir).
TASKS: dict[str, tuple[str, dict[str, str]]] = {
    "hellaswag": ("hellaswag/hellaswag.yaml", {"validation": "hellaswag/validation.jsonl"}),
    "piqa": ("piqa/piqa.yaml", {"validation": "piqa/validation.jsonl"}),
    "boolq": ("super_glue/boolq/default.yaml", {"validation": "boolq/validation.jsonl"}),
    "arc_easy": ("arc/arc_easy.yaml", {"validation": "arc_easy/validation.jsonl", "test": "arc_easy/test.jsonl"}),
    "arc_challenge": ("arc/arc_challenge.yaml",
                      {"validation": "arc_challenge/validation.jsonl", "test": "arc_challenge/test.jsonl"}),
    "winogrande": ("winogrande/default.yaml", {"validation": "winogrande/validation.jsonl"}),
    "openbookqa": ("openbookqa/openbookqa.yaml",
                   {"validation": "openbookqa/validation.jsonl", "test": "openbookqa/test.jsonl"}),
    "commonsense_qa": ("commonsense_qa/default.yaml", {"validation": "commonsense_qa/validation.jsonl"}),
    "race": ("race/race.yaml", {"test": "race/race_high_test.jsonl"}),
    # lm-eval's race is RACE-high only (EleutherAI/race has one config); RACE-middle is the same
    # task on the middle-school test file, available from a data dir alone.
    "race_middle": ("race/race.yaml", {"test": "race/race_middle_test.jsonl"}),
    "wsc273": ("wsc273/default.yaml", {"test": "wsc273/wsc273_test.jsonl"}),
    "wikitext": ("wikitext/wikitext.yaml", {"test": "wikitext/wikitext-2-raw-v1_test.jsonl"}),
}
ONLINE_MISSING = {"race_middle": "lm-eval's race task covers RACE-high only; RACE-middle needs --data-dir "
                                 "with race/race_middle_test.jsonl"}

# Groups of per-subject tasks: builtin folder, task-name prefix, local file pattern (None: no local data).
GROUPS: dict[str, tuple[str, str, str | None]] = {
    "mmlu": ("mmlu/default", "mmlu_", "mmlu/{subject}/{split}.jsonl"),
    "cmmlu": ("cmmlu", "cmmlu_", None),
}

# The score paper-style tables use: length-normalised accuracy where the answers are sentences
# of different lengths (lm-eval defines acc_norm there), plain accuracy elsewhere.
ACC_NORM_TASKS = {"hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa"}
SPLIT_KEYS = ("training_split", "validation_split", "test_split", "fewshot_split")


def default_metric(task: str) -> str:
    return "acc_norm" if task in ACC_NORM_TASKS else "acc"


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


@dataclass
class PreparedTasks:
    folder: Path  # the include_path for lm-eval's TaskManager
    available: list[str]
    not_available: dict[str, str]  # requested task or paper benchmark -> why it is not evaluated
    data: dict[str, str | None]  # task -> digest of its local files (None when downloaded)
    needs_builtin_index: bool = False  # a task outside TASKS/GROUPS: lm-eval's own index is needed
    subtasks: dict[str, list[str]] = field(default_factory=dict)  # group -> its leaf tasks


def prepare_tasks(names: list[str], data_dir: str | Path | None, folder: str | Path) -> PreparedTasks:
    """Write one YAML per task (and per group) into `folder`; report what cannot be evaluated."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    builtin = lm_eval_tasks_dir()
    data_root = Path(data_dir).resolve() if data_dir else None
    prepared = PreparedTasks(folder, [], {}, {})
    for name in names:
        if name in GROUPS:
            reason = _write_group(name, builtin, data_root, folder, prepared)
        elif name in TASKS:
            yaml_rel, files = TASKS[name]
            reason = _write_task(name, builtin / yaml_rel, files, data_root, folder / f"{name}.yaml", prepared)
        elif data_root is None:
            prepared.needs_builtin_index = True  # any other lm-eval task, downloaded as usual
            reason = None
            prepared.data[name] = None
        else:
            reason = f"no local data layout known for lm-eval task {name!r} in the data dir (offline run)"
        if reason:
            prepared.not_available[name] = reason
        else:
            prepared.available.append(name)
    for benchmark, reason in NOT_IN_LM_EVAL.items():
        prepared.not_available[benchmark] = reason
    return prepared


def _write_task(name, include: Path, files: dict[str, str], data_root, path: Path, prepared) -> str | None:
    config: dict = {"include": str(include), "task": name}
    if data_root is None:
        if name in ONLINE_MISSING:
            return ONLINE_MISSING[name]
        prepared.data[name] = None
    else:
        local = {split: data_root / rel for split, rel in files.items()}
        missing = [str(p) for p in local.values() if not p.is_file()]
        if missing:
            return f"local data missing: {', '.join(missing)}"
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


def _write_group(name, builtin: Path, data_root, folder: Path, prepared) -> str | None:
    sub_folder, prefix, pattern = GROUPS[name]
    if data_root is not None and pattern is None:
        return f"no local data for {name} in the data dir (offline run)"
    subtasks = sorted(p.stem for p in (builtin / sub_folder).glob(f"{prefix}*.yaml"))
    digests = {}
    for task in subtasks:
        include = builtin / sub_folder / f"{task}.yaml"
        files = {}
        if data_root is not None:
            subject = task.removeprefix(prefix)
            files = {split: pattern.format(subject=subject, split=split) for split in ("test", "validation", "dev")}
        reason = _write_task(task, include, files, data_root, folder / name / f"{task}.yaml", prepared)
        if reason:
            return f"{task}: {reason}"
        digests[task] = prepared.data.pop(task)
    metrics = [{"metric": "acc", "weight_by_size": True}]
    if name == "cmmlu":
        metrics.append({"metric": "acc_norm", "weight_by_size": True})
    _dump(folder / name / f"_{name}.yaml",
          {"group": name, "task": subtasks, "aggregate_metric_list": metrics, "metadata": {"version": 1}})
    prepared.data[name] = fingerprint(digests) if data_root is not None else None
    prepared.subtasks[name] = subtasks
    return None


def _dump(path: Path, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)
