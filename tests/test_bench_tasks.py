"""lm-eval tasks: generated YAMLs read local data offline; what cannot run is listed, not dropped."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from bench.tasks import NOT_IN_LM_EVAL, PAPER_BENCHMARKS, SHIPPED, load_table, prepare_tasks
from laco import LacoError

DATA_DIR = os.environ.get("LACO_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(not Path(DATA_DIR, "MANIFEST.md").is_file(),
                                reason=f"offline eval data not found at {DATA_DIR} (set LACO_DATA_DIR)")


@needs_data
def test_offline_yaml_includes_the_builtin_task_and_points_at_local_files(tmp_path):
    prepared = prepare_tasks(["arc_easy", "wikitext", "race_middle", "mmlu", "cmmlu"], DATA_DIR, tmp_path)
    assert prepared.available == ["arc_easy", "wikitext", "race_middle", "mmlu"]
    arc = yaml.safe_load((tmp_path / "arc_easy.yaml").read_text())
    assert arc["include"].endswith("lm_eval/tasks/arc/arc_easy.yaml") and Path(arc["include"]).is_file()
    assert arc["dataset_path"] == "json" and arc["dataset_name"] is None
    files = arc["dataset_kwargs"]["data_files"]
    assert files == {"validation": str(Path(DATA_DIR).resolve() / "arc_easy/validation.jsonl"),
                     "test": str(Path(DATA_DIR).resolve() / "arc_easy/test.jsonl")}
    assert arc["training_split"] is None and "test_split" not in arc  # no local train split; test kept
    wiki = yaml.safe_load((tmp_path / "wikitext.yaml").read_text())
    assert wiki["training_split"] is None and wiki["validation_split"] is None
    assert len(prepared.subtasks["mmlu"]) == 57
    anatomy = yaml.safe_load((tmp_path / "mmlu" / "mmlu_anatomy.yaml").read_text())
    assert set(anatomy["dataset_kwargs"]["data_files"]) == {"test", "validation", "dev"}
    assert "no local data for cmmlu" in prepared.not_available["cmmlu"]
    assert set(NOT_IN_LM_EVAL) <= set(prepared.not_available)
    assert prepared.data["arc_easy"] and prepared.data["mmlu"]  # digests of the local files


@needs_data
def test_lm_eval_reads_the_local_files(tmp_path):
    from lm_eval.tasks import TaskManager

    prepared = prepare_tasks(["race_middle", "arc_challenge"], DATA_DIR, tmp_path)
    manager = TaskManager(include_defaults=False, include_path=str(prepared.folder))
    tasks = manager.load(["race_middle", "arc_challenge"])["tasks"]
    # row counts of ../shared/data/MANIFEST.md: lm-eval scores ARC on the test split
    assert len(tasks["race_middle"].eval_docs) == 362 and len(tasks["arc_challenge"].eval_docs) == 1172


def test_without_data_dir_tasks_download_and_race_middle_is_not_available(tmp_path):
    prepared = prepare_tasks(["piqa", "race_middle", "some_other_lm_eval_task"], None, tmp_path)
    piqa = yaml.safe_load((tmp_path / "piqa.yaml").read_text())
    assert set(piqa) == {"include", "task"}  # lm-eval's own dataset, downloaded as usual
    assert "RACE-high only" in prepared.not_available["race_middle"]
    assert prepared.needs_builtin_index and "some_other_lm_eval_task" in prepared.available


def test_every_paper_benchmark_is_mapped_or_explained():
    for benchmark, task in PAPER_BENCHMARKS.items():
        assert (task is None) == (benchmark in NOT_IN_LM_EVAL)


# -- tasks as data -------------------------------------------------------------------------------
def test_the_shipped_table_marks_wsc273_as_a_different_data_set_from_the_papers_wsc(tmp_path):
    assert PAPER_BENCHMARKS["WSC"] == "wsc"
    assert "different data set" in SHIPPED.tasks["wsc273"].note and "104" in SHIPPED.tasks["wsc273"].note
    assert SHIPPED.tasks["wsc"].include == "super_glue/wsc/default.yaml"
    assert {t for t, e in SHIPPED.tasks.items() if e.metric == "acc_norm"} == {
        "hellaswag", "piqa", "arc_easy", "arc_challenge", "openbookqa"}
    empty_data_dir = tmp_path / "data"
    empty_data_dir.mkdir()
    prepared = prepare_tasks(["wsc", "wsc273"], empty_data_dir, tmp_path / "tasks")
    assert prepared.available == []
    assert "wsc/validation.jsonl" in prepared.not_available["wsc"]
    assert prepared.notes["wsc273"] == SHIPPED.tasks["wsc273"].note


def tiny_arc_rows(n: int) -> list[dict]:
    return [{"id": f"q{i}", "question": f"Which is number {i}?",
             "choices": {"text": ["one", "two", "three"], "label": ["A", "B", "C"]}, "answerKey": "ABC"[i % 3]}
            for i in range(n)]


def test_a_task_declared_in_the_data_dir_runs_offline(tmp_path, monkeypatch):
    """A benchmark the shipped table lacks, added by a data dir's tasks.toml alone."""
    from conftest import tiny_loaded
    from lm_eval.models.huggingface import HFLM

    from bench.lm_eval_run import run_lm_eval

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "data"
    (data / "tiny_arc").mkdir(parents=True)
    (data / "tiny_arc" / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in tiny_arc_rows(5)))
    (data / "tasks.toml").write_text('[tasks.tiny_arc]\ninclude = "arc/arc_easy.yaml"\n'
                                     'files = { test = "tiny_arc/test.jsonl" }\nmetric = "acc_norm"\n')
    assert "tiny_arc" not in SHIPPED.tasks
    prepared = prepare_tasks(["tiny_arc"], data, tmp_path / "tasks")
    assert prepared.available == ["tiny_arc"] and prepared.metrics == {"tiny_arc": "acc_norm"}

    loaded = tiny_loaded("llama")
    lm = HFLM(pretrained=loaded.model, tokenizer=loaded.tokenizer, batch_size=4, device="cpu")
    raw = run_lm_eval(lm, {"tiny_arc": {"limit": None}}, task_folder=str(prepared.folder), include_builtin=False,
                      cache_path=None, seed=0, bootstrap_iters=0)
    assert raw["n"] == {"tiny_arc": 5}
    assert raw["results"]["tiny_arc"]["acc,none"] * 5 in (0, 1, 2, 3, 4, 5)


def test_profile_entries_extend_and_replace_the_table(tmp_path):
    extra = {"tasks": {"piqa": {"include": "piqa/piqa.yaml", "files": {"validation": "mine/piqa.jsonl"}},
                       "new_task": {"include": "arc/arc_easy.yaml", "note": "from the profile"}}}
    table = load_table(None, extra)
    assert table.tasks["piqa"].files == {"validation": "mine/piqa.jsonl"} and table.tasks["piqa"].metric == "acc"
    assert table.note("new_task") == "from the profile" and "hellaswag" in table.tasks
    assert SHIPPED.tasks["piqa"].metric == "acc_norm"  # the shipped table is left as it was


@pytest.mark.parametrize("extra, message", [
    ({"tasks": {"t": {"include": "arc/arc_easy.yaml", "file": {}}}}, "unknown key(s) ['file']"),
    ({"tasks": {"t": {"files": {}}}}, "missing include"),
    ({"tasks": {"t": {"include": "arc/arc_easy.yaml", "metric": "f1"}}}, "metric must be one of"),
    ({"paper": {}}, "unknown section(s) ['paper']"),
    ({"groups": {"g": {"folder": "mmlu/default", "prefix": "mmlu_", "splits": "test"}}}, "splits has the wrong type"),
])
def test_bad_table_entries_are_errors(extra, message):
    with pytest.raises(LacoError, match=re.escape(message)):
        load_table(None, extra)


def test_a_bad_data_dir_table_names_its_file(tmp_path):
    (tmp_path / "tasks.toml").write_text("[tasks.x]\ninclude = 3\n")
    with pytest.raises(LacoError, match=re.escape(f"{tmp_path / 'tasks.toml'}: [tasks.x]: include has the wrong type")):
        load_table(tmp_path)


def test_a_profile_without_tasks_needs_no_lm_eval(tmp_path, monkeypatch):
    """A speed-and-memory profile (llama2-7b-shape-gpu) asks for no task: preparing none imports nothing of
    lm-eval, so such a run starts on a machine without it (the GPU image has none)."""
    import sys

    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    monkeypatch.setitem(sys.modules, "lm_eval.tasks", None)
    prepared = prepare_tasks([], DATA_DIR, tmp_path / "tasks")
    assert prepared.available == [] and prepared.data == {}
    with pytest.raises(ImportError):
        prepare_tasks(["piqa"], DATA_DIR, tmp_path / "tasks")
