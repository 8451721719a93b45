"""laco.record and laco.targets: the pruning record built once, its fingerprint from exactly what decides
the weights (run folders and resumes are keyed by it, so its value must not drift), and targets
parsed and checked in one place."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import tiny_loaded
from laco import LacoError
from laco.calibration import text_record
from laco.pruners import get_pruner
from laco.record import FINGERPRINT_FIELDS, build_record, calibration_description, record_fingerprint
from laco.surgery import decoder_layers, parameter_count
from laco.targets import depth_target, layers_for_ratio, parameter_target, parse_target

SENTENCES = ["The first calibration sentence is here.", "A second one follows it.", "And a third, a little longer."]

RECORD = {
    "source_fingerprint": "0123456789abcdef", "method": "laco",
    "config": {"C": 4, "L": 1, "H": 8, "I": 2, "T": 0.5, "merge": "paper"}, "target": {"layers": 6},
    "calibration": {"file": "laco/data/calibration.txt (default)", "sentences": 3, "sha256": "ab" * 32},
    "dtype": "float32",
}
# What the code before laco.record (laco.prune.pruned_fingerprint at da34f42) gave for RECORD.
FINGERPRINT_BEFORE = "aabe5861758d7700"


def test_the_fingerprint_keeps_its_value():
    expected = hashlib.sha256(json.dumps(RECORD, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]
    assert record_fingerprint(RECORD) == expected == FINGERPRINT_BEFORE


def test_the_fingerprint_is_made_of_exactly_six_fields():
    assert FINGERPRINT_FIELDS == ("source_fingerprint", "method", "config", "target", "calibration", "dtype")
    full = {**RECORD, "created": "2026-01-01T00:00:00+00:00", "seed": 0, "prune_seconds": 1.5, "libraries": {},
            "steps": [], "calibration": {**RECORD["calibration"], "documents": [3, 4], "unit": "paragraph"}}
    assert record_fingerprint(full) == FINGERPRINT_BEFORE  # the rest of the record is not identity
    changed = {"source_fingerprint": "f" * 16, "method": "drop", "config": {**RECORD["config"], "T": 0.6},
               "target": {"layers": 5}, "calibration": {**RECORD["calibration"], "sha256": "cd" * 32},
               "dtype": "bfloat16"}
    for key, value in changed.items():
        assert record_fingerprint({**RECORD, key: value}) != FINGERPRINT_BEFORE, key
    with pytest.raises(KeyError):
        record_fingerprint({k: v for k, v in RECORD.items() if k != "dtype"})


def test_a_callers_calibration_description_is_recorded_whole_with_the_digest_of_the_texts():
    described = {"file": "wikitext documents 3..4 (paragraphs)", "sentences": 3, "sha256": "stale", "documents": [3, 4]}
    recorded = calibration_description(SENTENCES, described)
    assert recorded == {**described, "sha256": hashlib.sha256("\n".join(SENTENCES).encode()).hexdigest()}
    assert calibration_description(SENTENCES, "texts.txt") == text_record(SENTENCES, "texts.txt")
    assert calibration_description(SENTENCES, None)["file"] == "laco/data/calibration.txt (default)"


@pytest.mark.parametrize("method,target", [("shortgpt", {"target_layers": 6}), ("laco", {"target_layers": 6})])
def test_a_pruner_given_the_whole_description_records_it_and_fingerprints_as_given_the_file(method, target):
    """The bench hands the pruner where its texts were drawn from; the record is complete when built and
    its fingerprint is the one the file name alone gives (the value run folders were keyed by)."""
    described = text_record(SENTENCES, "wikitext documents 3..4 (paragraphs)", documents=[3, 4], unit="paragraph")
    whole = get_pruner(method)(tiny_loaded("llama"), SENTENCES, calibration_file=described, progress=False,
                               **target).record
    by_name = get_pruner(method)(tiny_loaded("llama"), SENTENCES, calibration_file=described["file"],
                                 progress=False, **target).record
    assert whole["calibration"] == described and by_name["calibration"] == text_record(SENTENCES, described["file"])
    assert whole["fingerprint"] == by_name["fingerprint"] == record_fingerprint(by_name)


def test_the_record_holds_every_field_once_with_the_fingerprint_last():
    loaded = tiny_loaded("llama", n_layers=4)
    before = parameter_count(loaded.model)
    record = build_record(loaded, "example", SENTENCES, calibration=None, config={"k": 1}, target=None,
                          params_before=before * 2, seed=3, prune_seconds=0.25, note="a detail")
    assert list(record)[:3] == ["laco_bench_version", "created", "method"]
    assert list(record)[-5:] == ["note", "prune_seconds", "loader", "loadable", "fingerprint"]
    assert record["parameters"] == {"before": 2 * before, "after": before, "kept_ratio": 0.5, "pruning_ratio": 0.5}
    assert record["dtype"] == "float32" and record["seed"] == 3 and record["loader"] == "transformers"
    assert record["fingerprint"] == record_fingerprint(record)


# -- targets ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("ratio,layers,message", [
    (0.2, 4, "give either a target layer count or a target ratio, not both"),
    (1.2, None, r"target ratio must lie in \(0, 1\), got 1.2"),
    (0.0, None, r"target ratio must lie in \(0, 1\), got 0.0"),
    (float("nan"), None, r"target ratio must lie in \(0, 1\), got nan"),
    (None, None, "this method needs a target: target_ratio or target_layers"),
])
def test_a_bad_target_is_refused_before_the_model_is_read(ratio, layers, message):
    with pytest.raises(LacoError, match=message):
        parse_target(ratio, layers)


def test_no_target_is_allowed_where_the_method_has_its_own_stopping_rule():
    assert parse_target(None, None, required=False) is None
    assert depth_target(tiny_loaded("llama").model, None, None, required=False) == (None, None)


def test_a_ratio_becomes_the_layer_count_closest_to_it():
    model = tiny_loaded("llama", n_layers=8).model
    per_layer, total = parameter_count(decoder_layers(model)[0]), parameter_count(model)
    # tiny Llama: hidden 64, MLP 128, 4 heads of 16 with 2 KV heads, two norms
    assert per_layer == 64 * 64 * 2 + 64 * 32 * 2 + 3 * 64 * 128 + 2 * 64
    for ratio in (0.1, 0.3, 0.5):
        expected = 8 - min(range(8), key=lambda removed: abs(removed * per_layer - ratio * total))
        assert layers_for_ratio(model, ratio) == expected
        assert depth_target(model, ratio, None) == (expected, {"ratio": ratio, "layers": expected})


@pytest.mark.parametrize("layers", [0, 9])
def test_a_layer_count_must_fit_the_model(layers):
    model = tiny_loaded("llama", n_layers=8).model
    for target in (depth_target, parameter_target):
        with pytest.raises(LacoError, match=rf"target of {layers} layers must lie in 1\.\.8"):
            target(model, None, layers)


def test_a_width_target_counts_parameters():
    model = tiny_loaded("llama", n_layers=8).model
    per_layer, total = parameter_count(decoder_layers(model)[0]), parameter_count(model)
    assert parameter_target(model, 0.25, None) == (round(0.25 * total), {"ratio": 0.25})
    assert parameter_target(model, None, 6) == (2 * per_layer, {"layers": 6, "ratio": 2 * per_layer / total})
