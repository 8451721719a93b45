"""lm-eval tasks: generated YAMLs read local data offline; what cannot run is listed, not dropped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from bench.tasks import NOT_IN_LM_EVAL, PAPER_BENCHMARKS, prepare_tasks

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
