"""`laco prune`: outputs, provenance, and one-line errors with a non-zero exit and nothing written."""

import json
import re

import pytest

from laco.cli import main
from laco.saving import read_provenance


def prune(*args):
    return main(["prune", *map(str, args), "--quiet"])


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_prune_writes_a_complete_folder(tiny_folder, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert prune(tiny_folder, "--out", out, "--merge", "drop", "-C", 3, "-T", 0.3) == 0
    assert {"config.json", "model.safetensors", "tokenizer.json", "laco.json"} <= {p.name for p in out.iterdir()}
    record = read_provenance(out)
    assert record["merge_mode"] == "drop"
    assert record["config"] == {"C": 3, "L": 1, "H": 8, "I": 2, "T": 0.3, "merge": "drop"}
    assert record["source"]["kind"] == "folder" and len(record["source"]["sha256"]) == 64
    assert record["n_layers_after"] == json.loads((out / "config.json").read_text())["num_hidden_layers"]
    assert sorted(i for s in record["layer_sources"] for i in s) == list(range(8))
    assert [s["pointer"] for s in record["steps"]][0] == 5
    # one tiny Llama layer: q, o 64x64; k, v 64x32 (2 KV heads of 16); MLP 3 x 64x128; 2 norms of 64
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
    removed = record["parameters"]["before"] - record["parameters"]["after"]
    assert removed == (8 - record["n_layers_after"]) * per_layer > 0
    assert {"torch", "transformers", "python"} <= set(record["libraries"])
    assert record["calibration"]["sentences"] == 10 and record["seed"] == 0
    assert record["loader"] == "transformers" and record["prune_seconds"] == record["search_seconds"]
    assert "layers" in capsys.readouterr().out
    assert leftovers(tmp_path) == []


def test_force_replaces_and_refusal_keeps_the_old_output(tiny_folder, tmp_path, capsys):
    out = tmp_path / "pruned"
    assert prune(tiny_folder, "--out", out, "-T", 0.99) == 0
    first = read_provenance(out)["created"]
    assert prune(tiny_folder, "--out", out) == 2
    assert "output exists" in capsys.readouterr().err
    assert read_provenance(out)["created"] == first
    assert prune(tiny_folder, "--out", out, "--merge", "drop", "--force") == 0
    assert read_provenance(out)["merge_mode"] == "drop"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("args,message", [
    (["-C", 1], "C must be at least 2"),
    (["-T", 0], r"T must lie in \(0, 1\]"),
    (["-T", 1.2], r"T must lie in \(0, 1\]"),
    (["-L", 6, "-H", 5], "must not exceed H"),
    (["-H", 12], "beyond the model's 8 layers"),
    (["--target-layers", 1, "-C", 2, "-L", 4], "cannot reach 1 layers"),
])
def test_bad_hyper_parameters(tiny_folder, tmp_path, capsys, args, message):
    out = tmp_path / "pruned"
    assert prune(tiny_folder, "--out", out, *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("laco prune: error:")
    assert re.search(message, err)
    assert not out.exists() and leftovers(tmp_path) == []


def test_bad_inputs(tiny_folder, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    cases = [
        ([tiny_folder, "--calibration", empty], "calibration file is empty"),
        ([tiny_folder, "--calibration", tmp_path / "none.txt"], "calibration file not found"),
        ([tmp_path / "no-such-model", ], "model not found"),
    ]
    for args, message in cases:
        assert prune(*args, "--out", tmp_path / "out") == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_unsupported_architecture_names_what_is_missing(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    folder = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=64)).save_pretrained(folder)
    assert prune(folder, "--out", tmp_path / "out") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("laco prune:")]
    # GPT-2's projections are transformers' Conv1D, not nn.Linear: the generic merge rule cannot take them
    assert len(errors) == 1 and "unsupported architecture 'gpt2'" in errors[0]
    assert "outside linear and norm modules" in errors[0] and "attn.c_attn (Conv1D)" in errors[0]
    assert not (tmp_path / "out").exists()


def test_failed_save_leaves_nothing(tiny_folder, tmp_path, monkeypatch, capsys):
    from transformers import PreTrainedModel

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", broken)
    assert prune(tiny_folder, "--out", tmp_path / "out") == 2
    assert capsys.readouterr().err.strip() == "laco prune: error: disk full"
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_unknown_command_suggests_the_closest(capsys):
    assert main(["prunee"]) == 2
    assert "did you mean 'prune'" in capsys.readouterr().err


def test_same_inputs_give_byte_identical_weights(tiny_folder, tmp_path):
    for name in ("a", "b"):
        assert prune(tiny_folder, "--out", tmp_path / name, "--merge", "paper", "-T", 0.2) == 0
    a, b = ((tmp_path / n / "model.safetensors").read_bytes() for n in ("a", "b"))
    assert a == b and len(a) > 0
