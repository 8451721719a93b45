"""`laco prune --method`: every registered pruner from one command, its parameters, its calibration,
and one-line errors with exit code 2 and nothing written."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from laco.calibration import tokenize
from laco.cli import main, parse_param
from laco.pruners import PRUNERS, SUMMARIES, load_pruned
from laco.saving import read_provenance

LOADERS = {"llm-pruner": "laco.baselines.llm_pruner:load", "slicegpt": "laco.baselines.slicegpt:load"}


def prune(*args):
    return main(["prune", *map(str, args), "--quiet"])


def one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("laco prune:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_list_methods_names_every_registered_pruner_with_one_line(capsys):
    assert prune("--list-methods") == 0
    out = capsys.readouterr().out
    for name in PRUNERS:
        assert f"{name:<11} {SUMMARIES[name]}" in out.splitlines()
    assert "params: C=4, merge=paper" in out  # rule-merge's own parameters and defaults
    assert "params: slicing=None, damping=0.01" in out


@pytest.mark.parametrize("method", list(PRUNERS))
def test_every_method_writes_a_folder_that_its_loader_reloads(method, tiny_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert prune(tiny_folder, "--method", method, "--target-ratio", 0.25, "--out", out) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "laco.json"} <= {p.name for p in out.iterdir()}
    record = read_provenance(out)
    assert record["method"] == method and record["target"]["ratio"] == 0.25
    assert record["loader"] == LOADERS.get(method, "transformers")
    assert record["parameters"]["pruning_ratio"] > 0.1
    assert f"reload with {record['loader']}" in capsys.readouterr().out
    model, tokenizer, reread = load_pruned(out)
    assert reread == record
    with torch.no_grad():
        logits = model(**tokenize(tokenizer, ["Two short", "sentences here."])).logits
    assert logits.shape[-1] == 260 and torch.isfinite(logits).all()
    assert sum(p.numel() for p in model.parameters()) == record["parameters"]["after"]


def test_params_are_typed_and_reach_the_pruner(tiny_folder, tmp_path):
    assert parse_param("C=3") == ("C", 3) and parse_param("T=0.5") == ("T", 0.5)
    assert parse_param("compare_engines=True") == ("compare_engines", True) and parse_param("x=false") == ("x", False)
    assert parse_param("merge=reference") == ("merge", "reference") and parse_param("H=none") == ("H", None)
    out = tmp_path / "out"
    assert prune(tiny_folder, "--method", "rule-merge", "--target-layers", 6, "--param", "C=3",
                 "--param", "merge=reference", "--out", out) == 0
    record = read_provenance(out)
    assert record["config"]["C"] == 3 and record["merge_mode"] == "reference"
    assert record["layer_sources"][-1] == [5, 6, 7]  # 8 -> 6 layers by one group of C=3 from the top


@pytest.mark.parametrize("args,message", [
    (["--method", "shortgpt", "-C", 3], "shortgpt does not take C (its parameters: none)"),
    (["--method", "slicegpt", "--param", "dampign=0.1"], "slicegpt does not take dampign; did you mean 'damping'"),
    (["--method", "drop", "--merge", "paper"], "drop does not take merge"),
    (["--param", "T"], "--param takes KEY=VALUE"),
    (["--param", "T=0.5", "-T", 0.4], "T given both as a flag and as --param"),
    (["--param", "C=3", "--param", "C=4"], "--param C given twice"),
    (["--method", "shortgtp"], "did you mean 'shortgpt'"),
    (["--method", "shortgpt"], "needs a target"),
    (["--calibration-docs", "5"], "document range must be A:B"),
    (["--calibration-docs", "60:70"], "out of range: there are 62"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(args, message, tiny_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert prune(tiny_folder, *args, "--out", out) == 2
    assert message in one_error_line(capsys) or pytest.fail(message)
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_missing_model_or_out_is_one_line(capsys):
    assert prune("--method", "shortgpt") == 2
    assert "give a MODEL and --out DIR" in one_error_line(capsys)


def test_slicegpt_says_how_many_calibration_tokens_are_missing(tiny_folder, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("Hi.\nOk.\n")
    out = tmp_path / "out"
    assert prune(tiny_folder, "--method", "slicegpt", "--target-ratio", 0.25, "--calibration", short, "--out", out) == 2
    line = one_error_line(capsys)
    # byte tokenizer: <s> + 3 bytes per line = 8 tokens; 25% of the tiny Llama keeps 42 of 64 directions
    assert "slicegpt needs at least 42 calibration tokens" in line and "has 8, 34 missing" in line
    assert "--calibration-docs" in line and not out.exists()


def test_calibration_from_a_jsonl_field(tiny_folder, tmp_path):
    texts = ["The first calibration text.", "A second one, somewhat longer than the first one."]
    data = tmp_path / "cal.jsonl"
    data.write_text("".join(json.dumps({"page": t, "id": i}) + "\n" for i, t in enumerate(texts)))
    out = tmp_path / "out"
    assert prune(tiny_folder, "--method", "shortgpt", "--target-layers", 7, "--calibration", data,
                 "--calibration-field", "page", "--out", out) == 0
    calibration = read_provenance(out)["calibration"]
    assert calibration == {"file": f"{data} field page", "sentences": 2,
                           "sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest()}


def test_calibration_from_wikitext_documents_names_them(tiny_folder, tmp_path, data_dir):
    out = tmp_path / "out"
    assert prune(tiny_folder, "--method", "shortgpt", "--target-layers", 7, "--calibration-docs", "3:5",
                 "--out", out) == 0
    calibration = read_provenance(out)["calibration"]
    rows = [json.loads(line)["page"] for line in (data_dir / "wikitext/wikitext-2-raw-v1_test.jsonl").open()]
    paragraphs = [p.strip() for doc in rows[3:5] for p in doc.split("\n") if p.strip() and not p.strip().startswith("=")]
    assert calibration["file"] == "wikitext/wikitext-2-raw-v1_test.jsonl documents 3..4 (paragraphs)"
    assert calibration["sentences"] == len(paragraphs) > 20
    assert calibration["sha256"] == hashlib.sha256("\n".join(paragraphs).encode()).hexdigest()
