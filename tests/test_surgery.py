"""Deleting layers keeps the KV cache, the config and a reload consistent."""

import pytest
import torch
from conftest import tiny_loaded

from laco.surgery import delete_layers, parameter_count


def greedy(model, input_ids, use_cache, n=12):
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=n,
                         min_new_tokens=n, do_sample=False, use_cache=use_cache, pad_token_id=0)
    return out[0, input_ids.shape[1]:].tolist()


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral"])
def test_delete_reindexes_and_updates_config(model_type):
    loaded = tiny_loaded(model_type)
    model = loaded.model
    before = list(model.model.layers)
    types_before = list(getattr(model.config, "layer_types", None) or [])
    delete_layers(model, [1, 5, 6])
    kept = [0, 2, 3, 4, 7]
    assert list(model.model.layers) == [before[i] for i in kept]
    assert model.config.num_hidden_layers == 5
    assert [layer.self_attn.layer_idx for layer in model.model.layers] == list(range(5))
    if types_before:
        assert model.config.layer_types == [types_before[i] for i in kept]


def test_qwen2_sliding_layers_keep_their_type():
    model = tiny_loaded("qwen2").model
    assert model.config.layer_types[3:5] == ["full_attention", "sliding_attention"]
    delete_layers(model, [0, 1, 2, 3])
    assert model.config.layer_types == ["sliding_attention"] * 4
    assert all(layer.self_attn.sliding_window == 16 for layer in model.model.layers)


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3"])
def test_generation_with_cache_equals_without_after_deletion(model_type):
    model = tiny_loaded(model_type).model
    delete_layers(model, [2, 3, 6])
    prompt = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])
    assert greedy(model, prompt, use_cache=True) == greedy(model, prompt, use_cache=False)


def test_without_reindexing_the_cache_breaks():
    """The bug the re-indexing prevents: layer_idx beyond the new layer count."""
    model = tiny_loaded("llama").model
    layers = model.model.layers
    model.model.layers = torch.nn.ModuleList([layers[i] for i in (0, 1, 2, 7)])
    model.config.num_hidden_layers = 4
    prompt = torch.tensor([[1, 40, 41, 42, 43]])
    try:
        broken = greedy(model, prompt, use_cache=True) != greedy(model, prompt, use_cache=False)
    except (IndexError, RuntimeError, KeyError):
        broken = True
    assert broken


def test_reload_after_deletion_equals_in_memory(tmp_path):
    from transformers import AutoModelForCausalLM

    model = tiny_loaded("qwen2").model
    delete_layers(model, [1, 2])
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert reloaded.config.num_hidden_layers == 6
    assert parameter_count(reloaded) == parameter_count(model)
    ids = torch.tensor([[1, 50, 60, 70, 80, 90]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_delete_out_of_range_is_an_error():
    with pytest.raises(Exception, match="out of range"):
        delete_layers(tiny_loaded("llama").model, [8])
