"""Layer-by-layer (streamed) pruning on a tiny Llama: the same decisions and bit-identical weights as the
resident model, with a layer cache that holds only two layers (so layers are evicted and read again);
the memory plan and its refusals; the peak-memory measurement; sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from laco import LacoError
from laco.calibration import default_sentences
from laco.cli import main
from laco.loading import load_model
from laco.memory import parse_size
from laco.pruners import get_pruner, load_pruned
from laco.saving import save_pruned
from laco.stream.plan import model_shape, plan_memory
from laco.stream.prune import prune_streamed
from laco.stream.store import LayerCache, LayerSource

ROOT = Path(__file__).resolve().parents[1]

SENTENCES = default_sentences()[:6]
# one tiny Llama layer: q, o 64x64; k, v 64x32 (2 KV heads of 16); MLP 3 x 64x128; 2 norms of 64; float32
LAYER_BYTES = 4 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64)

CASES = {
    "laco-reference-T": ("laco", {"merge": "reference", "T": 0.3}),
    "laco-paper-target": ("laco", {"merge": "paper", "target_layers": 5}),
    "drop": ("drop", {"T": 0.3}),
    "rule-merge": ("rule-merge", {"target_layers": 5, "merge": "paper"}),
    "shortgpt": ("shortgpt", {"target_layers": 5}),
    "come": ("come", {"target_layers": 5}),
    "slicegpt": ("slicegpt", {"target_ratio": 0.2}),
}
DECISIONS = ("layer_sources", "steps", "removed_layers", "block_influence", "sliced_width", "energy_kept", "parameters")


def tensors(folder: Path) -> dict[str, torch.Tensor]:
    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(file))
    return out


def streamed_plan(folder: Path, method: str, params: dict, cache_layers: int):
    """A plan whose layer cache holds `cache_layers` layers, whatever the method would use."""
    shape = model_shape(str(folder), "float32", SENTENCES)
    plan = plan_memory(method, shape, params, max_memory=None, stream=True)
    plan.cache_use = cache_layers * LAYER_BYTES
    assert plan.cache == cache_layers * LAYER_BYTES
    return plan


@pytest.mark.parametrize("case", CASES)
def test_streamed_and_resident_pruning_make_the_same_decisions_and_weights(case, tiny_folder, tmp_path):
    method, params = CASES[case]
    loaded = load_model(str(tiny_folder))
    resident = get_pruner(method)(loaded, SENTENCES, progress=False, **params)
    save_pruned(resident.model, loaded.tokenizer, tmp_path / "resident", resident.record)

    plan = streamed_plan(tiny_folder, method, params, cache_layers=2)
    record, out = prune_streamed(str(tiny_folder), method, SENTENCES, out=tmp_path / "streamed", plan=plan,
                                 progress=False, **params)

    for key in DECISIONS:
        assert record.get(key) == resident.record.get(key), key
    expected, got = tensors(tmp_path / "resident"), tensors(out)
    assert sorted(got) == sorted(expected)
    assert all(torch.equal(got[name], expected[name]) for name in expected)
    config = json.loads((out / "config.json").read_text())
    assert config["num_hidden_layers"] == json.loads((tmp_path / "resident" / "config.json").read_text())["num_hidden_layers"]
    assert record["memory"]["streamed"] is True and record["memory"]["layer_cache_mb"] == pytest.approx(2 * LAYER_BYTES / 1e6)
    assert record["peak_memory"]["peak_rss_mb"] > 0 and record["fingerprint"] == resident.record["fingerprint"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no scratch or temporary left
    if case == "laco-reference-T":  # a stock folder: transformers reloads it and it computes what the resident output does
        model, tokenizer, _ = load_pruned(out)
        batch = tokenizer(["A sentence to run."], return_tensors="pt")
        reference, _, _ = load_pruned(tmp_path / "resident")
        with torch.no_grad():
            assert torch.equal(model(**batch).logits, reference(**batch).logits)


@pytest.mark.parametrize("method,params", [("shortgpt", {"target_layers": 6}), ("slicegpt", {"target_ratio": 0.2})])
def test_a_tied_head_streams_like_resident(method, params, tmp_path):
    from conftest import byte_tokenizer, scale_weights, tiny_config
    from transformers import AutoModelForCausalLM

    config = tiny_config("llama")
    config.tie_word_embeddings = True
    folder = tmp_path / "tied"
    torch.manual_seed(0)
    scale_weights(AutoModelForCausalLM.from_config(config)).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    loaded = load_model(str(folder))
    assert loaded.model.lm_head.weight is loaded.model.model.embed_tokens.weight
    resident = get_pruner(method)(loaded, SENTENCES, progress=False, **params)
    save_pruned(resident.model, loaded.tokenizer, tmp_path / "resident", resident.record)
    plan = streamed_plan(folder, method, params, cache_layers=2)
    _, out = prune_streamed(str(folder), method, SENTENCES, out=tmp_path / "streamed", plan=plan, progress=False, **params)
    expected, got = tensors(tmp_path / "resident"), tensors(out)
    assert sorted(got) == sorted(expected) and ("lm_head.weight" in got) == (method == "slicegpt")
    assert all(torch.equal(got[name], expected[name]) for name in expected)


@pytest.mark.parametrize("cache_layers", [0, 100])
def test_laco_streams_the_same_without_a_cache_and_with_every_layer_cached(cache_layers, tiny_folder, tmp_path):
    params = {"merge": "reference", "T": 0.3}
    plan = streamed_plan(tiny_folder, "laco", params, cache_layers)
    record, out = prune_streamed(str(tiny_folder), "laco", SENTENCES, out=tmp_path / "out", plan=plan, progress=False,
                                 **params)
    loaded = load_model(str(tiny_folder))
    resident = get_pruner("laco")(loaded, SENTENCES, progress=False, **params)
    assert record["layer_sources"] == resident.record["layer_sources"]
    if cache_layers == 0:
        assert record["memory"]["cache_hits"] == 0
    else:  # the dense pass reads every layer once; every later use of an unchanged layer is a hit
        assert record["memory"]["cache_hits"] > 0 and record["memory"]["layer_reads"] >= 8


def test_cli_streams_when_asked_and_the_output_reloads_in_stock_transformers(tiny_folder, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "out"
    assert main(["prune", str(tiny_folder), "--out", str(out), "--method", "shortgpt", "--target-layers", "6", "--stream",
                 "--quiet"]) == 0
    record = json.loads((out / "laco.json").read_text())
    assert record["memory"]["streamed"] is True and record["memory"]["max_memory_from"] == "available memory"
    assert record["n_layers_after"] == 6 == len(record["removed_layers"]) + 4
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 6 and len(model.model.layers) == 6
    assert sorted(json.loads((out / "model.safetensors.index.json").read_text())["weight_map"].values())[-1] \
        == "model-00007-of-00007.safetensors"


def test_the_cache_gets_what_the_bound_leaves_beside_the_formula_and_its_margin(tiny_folder):
    shape = model_shape(str(tiny_folder), "float32", SENTENCES)
    plan = plan_memory("laco", shape, {"merge": "reference"}, max_memory=None, stream=True)
    fixed = sum(plan.streamed.values())
    assert plan.cache_use == 8 * LAYER_BYTES  # LaCo's candidates run the layers above them again: all can be reused
    plan.bound = plan.runtime + 1.25 * fixed + 3 * LAYER_BYTES
    assert plan.cache == 3 * LAYER_BYTES and plan.estimate() == plan.runtime + fixed + 3 * LAYER_BYTES
    plan.bound = plan.runtime + 1.1 * fixed  # the bound fits the figure but not its margin: no cache
    assert plan.cache == 0
    one_pass = plan_memory("shortgpt", shape, {}, max_memory=None, stream=True)
    assert one_pass.cache_use == 0 and one_pass.cache == 0  # a single pass reads each layer once


def test_a_model_larger_than_the_bound_streams_without_being_asked(tiny_folder):
    shape = model_shape(str(tiny_folder), "float32", SENTENCES)
    resident = plan_memory("shortgpt", shape, {}, max_memory=None)
    bound = resident.total(resident.streamed) + LAYER_BYTES  # room for everything but the whole model
    assert resident.stream is False
    assert plan_memory("shortgpt", shape, {}, max_memory=bound).stream is True


def test_a_method_without_a_formula_is_not_planned_and_is_refused_layer_by_layer(tiny_folder, monkeypatch):
    import laco.pruners

    shape = model_shape(str(tiny_folder), "float32", SENTENCES)
    monkeypatch.setattr(laco.pruners, "memory_need", lambda *args, **kwargs: None)  # a plugin that declares none
    assert plan_memory("shortgpt", shape, {}, max_memory=1) is None
    with pytest.raises(LacoError, match="declares no memory formula"):
        plan_memory("shortgpt", shape, {}, max_memory=None, stream=True)


def test_llm_pruner_is_refused_before_loading_with_its_figure(tiny_folder, tmp_path, capsys):
    params = sum(p.numel() for p in load_model(str(tiny_folder)).model.parameters())
    out = tmp_path / "out"
    assert main(["prune", str(tiny_folder), "--out", str(out), "--method", "llm-pruner", "--target-ratio", "0.2",
                 "--max-memory", "50MB", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "llm-pruner cannot prune layer by layer and needs" in err
    weights = f"{params * 4 / 1e6:.3g} MB"
    assert f"weights {weights}, gradients {weights}, activations" in err and "the memory bound is 50 MB" in err
    assert not out.exists()


def test_a_bound_below_one_layer_is_refused_naming_the_layer(tiny_folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(tiny_folder), "--out", str(out), "--stream", "--max-memory", "100kB", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert "a memory bound of 100 kB (--max-memory) is below what laco needs layer by layer" in err
    assert f"one decoder layer is {LAYER_BYTES / 1e3:.3g} kB" in err and not out.exists()


PEAK_OF_A_BLOCK = """
import torch
from laco.memory import PeakMemory, rss_now
before = rss_now()
with PeakMemory() as peak:
    block = torch.ones(50_000_000, dtype=torch.uint8)  # 50 MB, touched
    del block
print(before, peak.as_dict()["peak_rss_mb"])
"""


def test_peak_memory_sees_an_allocation_inside_the_block():
    # in a process of its own: a long test session's allocator holds freed memory it would reuse unseen
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    out = subprocess.run([sys.executable, "-c", PEAK_OF_A_BLOCK], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": path})
    before, peak_mb = map(float, out.stdout.split())
    assert peak_mb * 1e6 >= before + 45e6


@pytest.mark.parametrize("text,size", [("6GB", 6 * 10**9), ("6 GiB", 6 * 2**30), ("512MB", 512 * 10**6), ("1.5G", 1.5e9),
                                       ("2048", 2048)])
def test_sizes_read_as_written(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["lots", "6XB", "0GB", ""])
def test_bad_sizes_are_one_line(text):
    with pytest.raises(LacoError, match="memory size"):
        parse_size(text)


def test_cache_drops_the_lowest_layer_and_never_keeps_one_below_all_it_holds():
    index = None
    sources = [LayerSource(index, f"l{i}.", i) for i in range(4)]
    one = {"w": torch.zeros(250, dtype=torch.uint8)}
    cache = LayerCache(capacity=500)
    cache.put(sources[1], dict(one))
    cache.put(sources[2], dict(one))
    cache.put(sources[3], dict(one))  # full: layer 1, the lowest, goes
    assert set(cache.entries) == {sources[2], sources[3]}
    cache.put(sources[0], dict(one))  # lower than everything kept: not admitted
    assert set(cache.entries) == {sources[2], sources[3]}
    assert cache.take(sources[3]) is not None and cache.take(sources[3]) is None
    assert (cache.hits, cache.misses) == (1, 1)


def test_a_streamed_prune_killed_mid_search_leaves_a_temporary_that_the_rerun_removes(tiny_folder, tmp_path):
    from test_kill_safety import KILLED, check_reloads, laco, temporaries

    work = tmp_path / "work"
    work.mkdir()
    args = ["prune", tiny_folder, "--out", work / "pruned", "--merge", "paper", "-C", "3", "-T", "0.3", "--stream", "--quiet"]
    killed = laco(args, work, kill_at="collapse:step@3")  # merges were spilled to the scratch folder by then
    assert killed.returncode == KILLED, killed.stderr[-2000:]
    left = temporaries(work)
    assert [p.name.split(".tmp-")[0] for p in left] == [".pruned"] and any(left[0].rglob("*.safetensors"))
    rerun = laco(args, work)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert [p.name for p in work.iterdir()] == ["pruned"]
    assert check_reloads(work / "pruned")["memory"]["streamed"] is True


def test_a_streamed_forward_fills_the_cache_and_replaced_layers_leave_it(tiny_folder, tmp_path):
    from laco.calibration import tokenize
    from laco.stream.model import open_streamed
    from laco.stream.store import SOURCE_ATTR
    from laco.surgery import decoder_layers

    loaded = open_streamed(str(tiny_folder), cache_bytes=100 * LAYER_BYTES, scratch=tmp_path / "scratch")
    layers = decoder_layers(loaded.model)
    assert all(p.device.type == "meta" for p in layers.parameters())
    with torch.no_grad():
        streamed = loaded.model(**tokenize(loaded.tokenizer, SENTENCES)).logits
    reference = load_model(str(tiny_folder))
    with torch.no_grad():
        assert torch.equal(streamed, reference.model(**tokenize(reference.tokenizer, SENTENCES)).logits)
    sources = [getattr(layer, SOURCE_ATTR) for layer in layers]
    assert set(loaded.store.cache.entries) == set(sources) and loaded.store.reads == 8
    merged = loaded.adopt(loaded.materialise(layers[3]), 3, replaces=layers[3:5])
    assert sources[3] not in loaded.store.cache.entries and sources[4] not in loaded.store.cache.entries
    assert getattr(merged, SOURCE_ATTR) in loaded.store.cache.entries and len(list((tmp_path / "scratch").iterdir())) == 1
    del merged
    assert list((tmp_path / "scratch").iterdir()) == []  # a layer no longer held: its scratch file goes
