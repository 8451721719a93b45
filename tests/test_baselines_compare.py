"""The quick perplexity and the LaCo-ratio comparison, on tiny models."""

import math

import pytest
import torch
from conftest import tiny_loaded

from bench.baselines_compare import compare_at_laco_ratio, window_perplexity


def test_window_perplexity_is_the_exp_of_the_models_mean_loss():
    loaded = tiny_loaded("llama")
    text = "The quick brown fox jumps over the lazy dog. " * 20
    result = window_perplexity(loaded.model, loaded.tokenizer, text, window=32, n_windows=3)
    ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :96]
    with torch.no_grad():
        losses = [loaded.model(ids[:, w * 32 : (w + 1) * 32], labels=ids[:, w * 32 : (w + 1) * 32]).loss.item()
                  for w in range(3)]
    assert result["ppl"] == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)
    assert (result["window"], result["n_windows"], result["tokens_scored"]) == (32, 3, 93)


def test_compare_runs_every_method_at_lacos_ratio(tiny_folder, data_dir):
    rows = compare_at_laco_ratio(str(tiny_folder), methods=["shortgpt", "llm-pruner"], laco_params={"T": 0.05},
                                 window=32, n_windows=2, data=data_dir)
    assert [r["method"] for r in rows] == ["dense", "laco", "shortgpt", "llm-pruner"]
    laco_ratio = rows[1]["pruning_ratio"]
    assert rows[0]["pruning_ratio"] == 0 and laco_ratio > 0
    assert all(r["target_ratio"] == laco_ratio for r in rows[2:])
    assert rows[2]["pruning_ratio"] == pytest.approx(laco_ratio)  # same layer count
    assert all(math.isfinite(r["ppl"]) and r["prune_seconds"] > 0 for r in rows[1:])


def test_compare_command_reports_bad_input_in_one_line(tiny_folder, data_dir, tmp_path, capsys):
    from laco.cli import main

    out = tmp_path / "rows.json"
    # LaCo's default T=0.65 merges nothing on this random tiny model: there is no ratio to match
    argv = ["baselines-compare", "--model", str(tiny_folder), "--methods", "shortgpt", "--window", "32",
            "--windows", "2", "--data", str(data_dir), "--json", str(out)]
    assert main(argv) == 2 and not out.exists()
    assert "no ratio to match" in capsys.readouterr().err
    assert main(["baselines-compare", "--methods", "shortgtp"]) == 2
    assert "did you mean 'shortgpt'" in capsys.readouterr().err


def test_compare_keeps_the_pruned_folders_and_feeds_slicegpt_enough_calibration(tiny_folder, data_dir, tmp_path):
    from laco.pruners import load_pruned

    out = tmp_path / "kept"
    rows = compare_at_laco_ratio(str(tiny_folder), methods=["shortgpt", "slicegpt"], laco_params={"T": 0.05},
                                 sentences=["Hi there."], window=32, n_windows=2, data=data_dir, out=out)
    assert sorted(p.name for p in out.iterdir()) == ["laco", "shortgpt", "slicegpt"]
    for row in rows[1:]:
        model, _, record = load_pruned(row["folder"])
        assert record["method"] == row["method"] and record["fingerprint"] == row["fingerprint"]
    # 10 byte tokens are fewer than the directions SliceGPT keeps; 2 windows of 32 bytes lie in document 0
    slicegpt = rows[-1]
    assert slicegpt["calibration"].startswith("wikitext/wikitext-2-raw-v1_test.jsonl documents 1..1 (first ")
    assert rows[2]["calibration"] == "laco/data/calibration.txt (default)"
