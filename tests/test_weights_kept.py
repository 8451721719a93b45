"""`[run] keep_pruned_weights = "while-measured"` (bench.weights_kept): a pruned model's weights folder is
removed once no later step reads it, its record and results stay; a resume reuses them without the weights,
and a step that must read them again prunes again and checks the weights' digest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import runner
from bench.profile import parse_profile
from bench.weights_kept import last_reader
from laco import LacoError
from laco.config import tomllib
from run_fixtures import SMALL_SETTINGS, TWO_DEPTH_METHODS

PROFILE = """measurements = ["perplexity"]
[model]
spec = "{spec}"
[run]
keep_pruned_weights = "while-measured"
""" + TWO_DEPTH_METHODS + SMALL_SETTINGS


def profile_of(text: str):
    return parse_profile(tomllib.loads(text))


def snapshot(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.glob("*s/**/*.json"))
            if p.parts[len(run.parts)] in ("models", "results")}


def run_recording(profile, run: Path, data_dir) -> tuple[list[str], dict[str, list[str]]]:
    """Run the profile; returns (failures, {model/measurement written: the weights folders on disk then})."""
    seen = {}

    def record(doc):
        weights = run / "weights"
        seen[f"{doc['model']}/{doc['measurement']}"] = sorted(p.name for p in weights.iterdir()) if weights.is_dir() else []

    failures = runner.run_profile("p", profile, run, data_dir=str(data_dir), progress=False, on_result=record)
    return failures, seen


@pytest.fixture
def finished(tiny_folder, tmp_path, data_dir):
    """A finished run of PROFILE: (profile, run folder, the weights on disk at each result)."""
    profile = profile_of(PROFILE.format(spec=tiny_folder))
    run = tmp_path / "run"
    failures, seen = run_recording(profile, run, data_dir)
    assert failures == []
    return profile, run, seen


def test_a_run_keeps_one_copy_at_a_time_and_ends_with_results_and_no_weights(finished):
    profile, run, seen = finished
    # each model measured beside its own copy only: shortgpt's is gone before drop is pruned
    assert seen == {"dense/perplexity": [], "shortgpt/perplexity": ["shortgpt"], "drop/perplexity": ["drop"]}
    assert not (run / "weights").exists() or list((run / "weights").iterdir()) == []
    for label in ("shortgpt", "drop"):
        doc = json.loads((run / "models" / f"{label}.json").read_text())
        assert len(doc["weights_sha256"]) == 64
        assert json.loads((run / "results" / label / "perplexity.json").read_text())["status"] == "ok"
    assert json.loads((run / "run.json").read_text())["finished"] is not None


def test_a_resume_measures_nothing_again_and_prunes_nothing(finished, data_dir):
    profile, run, _ = finished
    before = snapshot(run)
    failures, seen = run_recording(profile, run, data_dir)
    assert failures == [] and seen == {}
    assert snapshot(run) == before
    assert not (run / "weights").exists() or list((run / "weights").iterdir()) == []


def test_a_step_that_reads_removed_weights_prunes_again_to_the_recorded_digest(finished, data_dir):
    profile, run, _ = finished
    model_doc = (run / "models" / "drop.json").read_bytes()
    (run / "results" / "drop" / "perplexity.json").unlink()
    failures, seen = run_recording(profile, run, data_dir)
    assert failures == [] and seen == {"drop/perplexity": ["drop"]}  # made again for it, removed after
    assert (run / "models" / "drop.json").read_bytes() == model_doc
    assert list((run / "weights").iterdir()) == []

    doc = json.loads(model_doc)
    (run / "models" / "drop.json").write_text(json.dumps({**doc, "weights_sha256": "0" * 64}))
    (run / "results" / "drop" / "perplexity.json").unlink()
    with pytest.raises(LacoError, match=r"^drop: pruned again for a step that reads its weights, it gave other "
                                        r"weights \(sha256 [0-9a-f]{12}\) than those its results were measured on "
                                        r"\(000000000000\); remove .*drop\.json to prune and measure it afresh$"):
        runner.run_profile("p", profile, run, data_dir=str(data_dir), progress=False)
    assert not (run / "weights" / "drop").exists()


def test_the_last_step_that_reads_each_copy():
    """A copy is kept until the last of: its own entry, a later entry pruning it further (and the pruning-time
    phase when that entry takes it), the throughput phases it takes part in; post-trained entries keep theirs."""
    profile = profile_of("""measurements = ["perplexity", "pruning_time", "throughput_hf", "throughput_vllm"]
[model]
spec = "tiny"
[run]
keep_pruned_weights = "while-measured"
[vllm]
models = ["b"]
[[methods]]
name = "drop"
label = "a"
target = 0.2
measurements = ["perplexity"]
[[methods]]
name = "drop"
label = "b"
target = 0.2
measurements = ["perplexity", "throughput_vllm"]
[[methods]]
name = "drop"
label = "c"
target = 0.4
source = "a"
measurements = ["perplexity", "pruning_time"]
[[methods]]
name = "drop"
label = "d"
target = 0.2
measurements = ["perplexity", "throughput_hf", "throughput_vllm"]
""")
    assert last_reader(profile) == {"a": "pruning_time", "b": "throughput_vllm", "c": "c", "d": "throughput_hf"}
    profile.run.keep_pruned_weights = "always"
    assert last_reader(profile) == {}
