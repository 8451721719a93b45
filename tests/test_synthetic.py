"""Shaped stand-ins (`synthetic:NAME`): the published shapes, deterministic builds that stock transformers
loads, a tokenizer cut to the model's vocabulary, the record's note, and one-line refusals."""

from __future__ import annotations

import json
import sys

import pytest
import torch

from laco import LacoError
from laco.memory import meta_model
from laco.provenance import folder_weights_sha256
from laco.loading import load_tokenizer
from laco.synthetic import WEIGHTS_NOTE, SyntheticSpec, build, parse, transformers_config

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

TEXT = "Layer Collapse merges rear layers into a prior one; the merged model keeps most of its accuracy. " * 3


@pytest.fixture(scope="module")
def embedded_tokenizer():
    try:
        return load_tokenizer("smollm2-135m")
    except LacoError as exc:
        pytest.skip(f"embedded SmolLM2 unavailable: {exc}")


# Parameter counts of the published checkpoints (their model cards' "7B", "13B", "70B"), as computed from
# the published shapes: embeddings + head + layers x (attention + MLP + two norms) + final norm.
@pytest.mark.parametrize("name,params", [("llama2-7b", 6_738_415_616), ("llama2-13b", 13_015_864_320),
                                         ("llama2-70b", 68_976_648_192)])
def test_published_shapes_give_the_published_parameter_counts(name, params):
    model = meta_model(transformers_config(name, "bfloat16"))
    assert sum(p.numel() for p in model.parameters()) == params
    assert model.config.vocab_size == 32000 and model.config.tie_word_embeddings is False


def test_the_same_seed_builds_the_same_files_and_another_seed_does_not(embedded_tokenizer, tmp_path):
    a = build(SyntheticSpec("tiny-llama"), tmp_path / "a", load_tokenizer)
    b = build(SyntheticSpec("tiny-llama"), tmp_path / "b", load_tokenizer)
    c = build(SyntheticSpec("tiny-llama", seed=1), tmp_path / "c", load_tokenizer)
    assert folder_weights_sha256(a) == folder_weights_sha256(b) != folder_weights_sha256(c)
    assert len(list(a.glob("model-*.safetensors"))) == 6 + 1  # one shard per layer and one for the rest


def test_a_built_model_loads_in_stock_transformers_and_generates(embedded_tokenizer, tmp_path):
    from importlib import resources

    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build(SyntheticSpec("tiny-llama", dtype="float32"), tmp_path / "tiny", load_tokenizer)
    shape = tomllib.loads(resources.files("laco").joinpath("data/synthetic_models.toml").read_text())["tiny-llama"]["config"]
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert {k: getattr(model.config, k) for k in ("hidden_size", "num_hidden_layers", "vocab_size")} == \
        {k: shape[k] for k in ("hidden_size", "num_hidden_layers", "vocab_size")}
    assert model.model.embed_tokens.weight.dtype == torch.float32
    ids = tokenizer(TEXT, return_tensors="pt")["input_ids"]
    assert int(ids.max()) < shape["vocab_size"] and tokenizer.decode(ids[0]) == TEXT
    out = model.generate(ids[:, :8], max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape == (1, 11)
    record = json.loads((folder / "synthetic.json").read_text())
    assert record["note"] == WEIGHTS_NOTE and record["tokenizer"]["vocab_size"] == shape["vocab_size"]


def test_the_cut_tokenizer_uses_fewer_tokens_of_the_embedded_vocabulary(embedded_tokenizer):
    from laco.synthetic import synthetic_tokenizer

    cut = synthetic_tokenizer(32000, embedded_tokenizer)
    full_ids, cut_ids = embedded_tokenizer(TEXT)["input_ids"], cut(TEXT)["input_ids"]
    assert len(cut) == 32000 and max(cut_ids) < 32000 and cut.decode(cut_ids) == TEXT
    assert len(cut_ids) >= len(full_ids)
    assert len(synthetic_tokenizer(125696, embedded_tokenizer)) == len(embedded_tokenizer)


def test_the_source_record_says_synthetic_weights(embedded_tokenizer):
    from laco.loading import resolve

    source = resolve("synthetic:tiny-llama,seed=2")
    assert source.kind == "synthetic" and source.model_id == "synthetic:tiny-llama"
    assert source.as_dict()["synthetic"]["note"] == "synthetic weights: speed and memory only"
    assert source.as_dict()["synthetic"]["seed"] == 2
    assert "synthetic" not in resolve("smollm2-135m").as_dict()


def test_unknown_names_and_options_are_one_line_and_nothing_is_written(tmp_path, monkeypatch):
    from laco.loading import resolve

    monkeypatch.setenv("LACO_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(LacoError, match=r"unknown synthetic model 'llama3-8b'; known: llama2-7b, llama2-13b, llama2-70b"):
        resolve("synthetic:llama3-8b")
    with pytest.raises(LacoError, match="options are dtype=D and seed=N"):
        parse("synthetic:tiny-llama,sead=1")
    with pytest.raises(LacoError, match="dtype must be one of bfloat16, float16, float32"):
        parse("synthetic:tiny-llama,dtype=int8")
    with pytest.raises(LacoError, match="synthetic:baichuan2-7b is not built: .*remote code"):
        resolve("synthetic:baichuan2-7b")
    assert not (tmp_path / "cache").exists()
