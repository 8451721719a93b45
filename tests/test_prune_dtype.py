"""`[model] prune_dtype`: the pruning step (bench.pruned, the pruning-time phase) loads the dense model and
prunes in its dtype and saves the weights in it; the measurements load them in the run's dtype. Three tiny
runs: float32 throughout (as runs were before the key), bfloat16 pruned in float32, bfloat16 throughout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import cli as bench_cli
from laco.provenance import fingerprint

TINY_PROFILE = """
measurements = ["perplexity", "pruning_time"]
[model]
spec = "{folder}"
prune_dtype = "{prune_dtype}"
[[methods]]
name = "laco"
label = "laco-x"
params = {{ merge = "reference", C = 3, L = 1, I = 2, T = 0.3 }}
[perplexity]
window = 32
n_windows = 3
batch_size = 3
lm_eval_wikitext = false
[pruning_time]
repeats = 1
"""

RUNS = {"float32": ("same", "float32"), "bf16-pruned-in-float32": ("float32", "bfloat16"), "bf16": ("same", "bfloat16")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> dict[str, Path]:
    """Each run's folder: (prune_dtype, --dtype) of RUNS, on one tiny Llama."""
    from conftest import tiny_loaded

    root = tmp_path_factory.mktemp("prune-dtype")
    loaded = tiny_loaded("llama")
    loaded.model.save_pretrained(root / "tiny")
    loaded.tokenizer.save_pretrained(root / "tiny")
    folders = {}
    for name, (prune_dtype, dtype) in RUNS.items():
        profile = root / f"{name}.toml"
        profile.write_text(TINY_PROFILE.format(folder=root / "tiny", prune_dtype=prune_dtype))
        folders[name] = root / name
        code = bench_cli.bench_main(["--profile", str(profile), "--out", str(folders[name]), "--dtype", dtype,
                                     "--data-dir", str(data_dir), "--quiet"])
        assert code == 0, name
    return folders


def model_doc(folder: Path, key: str = "laco-x") -> dict:
    return json.loads((folder / "models" / f"{key}.json").read_text())


def result(folder: Path, measurement: str, key: str = "laco-x") -> dict:
    return json.loads((folder / "results" / key / f"{measurement}.json").read_text())


def test_bf16_pruned_in_float32_has_the_float32_runs_weights(runs):
    ours, f32 = model_doc(runs["bf16-pruned-in-float32"]), model_doc(runs["float32"])
    assert ours["record"]["n_layers_after"] < ours["record"]["n_layers_before"]  # the search merged layers
    assert ours["record"]["layer_sources"] == f32["record"]["layer_sources"]
    assert ours["weights_sha256"] == f32["weights_sha256"]
    assert ours["record"]["fingerprint"] == f32["record"]["fingerprint"] and ours["record"]["dtype"] == "float32"
    assert ours["dtypes"] == {"pruned": "float32", "measured": "bfloat16"}
    assert f32["dtypes"] == {"pruned": "float32", "measured": "float32"}


def test_the_measurements_are_in_bfloat16_and_the_pruning_time_in_float32(runs):
    ours, f32 = runs["bf16-pruned-in-float32"], runs["float32"]
    for key in ("dense", "laco-x"):
        ppl = result(ours, "perplexity", key)
        assert ppl["settings"]["dtype"] == "bfloat16" and ppl["dtypes"]["measured"] == "bfloat16"
        # the same weights measured in bf16 (loaded from the saved float32 ones, not the model pruned in memory)
        assert ppl["values"]["windows"]["nll"] != result(f32, "perplexity", key)["values"]["windows"]["nll"]
    timing = result(ours, "pruning_time")
    assert timing["status"] == "ok" and timing["settings"]["dtype"] == "float32"
    assert timing["settings_hash"] == result(f32, "pruning_time")["settings_hash"]


def test_the_two_dtypes_never_share_an_identity(runs):
    ours, f32, bf16 = (model_doc(runs[name]) for name in ("bf16-pruned-in-float32", "float32", "bf16"))
    # a run pruning in its own dtype keeps the identity it had before prune_dtype: record and weights
    assert f32["fingerprint"] == fingerprint({"pruned": f32["record"]["fingerprint"], "weights": f32["weights_sha256"]})
    assert len({ours["fingerprint"], f32["fingerprint"], bf16["fingerprint"]}) == 3
    assert result(runs["bf16-pruned-in-float32"], "perplexity")["model_fingerprint"] == ours["fingerprint"]
    # a search in bf16 is another prune: its record and weights differ from float32's
    assert bf16["record"]["dtype"] == "bfloat16" and bf16["dtypes"] == {"pruned": "bfloat16", "measured": "bfloat16"}
    assert bf16["record"]["fingerprint"] != f32["record"]["fingerprint"]
    assert bf16["weights_sha256"] != f32["weights_sha256"]
    assert bf16["prune_settings_hash"] != ours["prune_settings_hash"]


def test_run_json_and_the_report_header_show_both_dtypes(runs):
    from suites.evidence import load_run
    from suites.report.overview import header, run_section

    rows = {}
    for name, folder in runs.items():
        model = json.loads((folder / "run.json").read_text())["profile"]["model"]
        assert (model["prune_dtype"], model["dtype"]) == RUNS[name]
        run = load_run(folder)
        rows[name] = {line.split("|")[1].strip(): line.split("|")[2].strip()
                      for line in run_section(run).splitlines() if line.startswith("| ")}["dtype"]
        assert f"{rows[name]} on cpu" in header(run, [])  # the first lines say it too
    assert rows["float32"] == "float32; pruned in float32"
    assert rows["bf16-pruned-in-float32"].startswith("bfloat16; pruned in float32; --dtype bfloat16")
    assert rows["bf16"].startswith("bfloat16; pruned in bfloat16; --dtype bfloat16")
