"""The generic rules of `laco.architectures` and `laco.surgery` on cases that break them."""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_loaded, tiny_model
from torch import nn

from laco import LacoError
from laco.architectures import architecture_of, inspect_config
from laco.surgery import delete_layers, per_layer_config_keys


def test_a_large_config_is_inspected_on_the_meta_device():
    """A 7B-sized config would need 27 GB in float32; on the meta device it needs none."""
    from transformers import LlamaConfig

    arch = inspect_config(LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                      num_attention_heads=32, vocab_size=32000))
    assert arch.layers_path == "model.layers" and arch.final_norm == "norm"
    assert arch.merged == ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
    assert arch.kept == ("input_layernorm", "post_attention_layernorm")


def test_a_linear_outside_attention_and_mlp_is_named():
    model = tiny_model("llama", n_layers=4)
    for layer in model.model.layers:
        layer.adapter = nn.Linear(64, 64)
    with pytest.raises(LacoError, match="linear modules outside the attention and MLP blocks: adapter$"):
        architecture_of(model)


def test_a_parameter_outside_linears_and_norms_is_named():
    model = tiny_model("llama", n_layers=4)
    for layer in model.model.layers:
        layer.mlp.register_parameter("mixer", nn.Parameter(torch.zeros(4, 4)))
    with pytest.raises(LacoError, match=r"outside linear and norm modules: mlp \(LlamaMLP\)"):
        architecture_of(model)


def test_a_missing_final_norm_is_named():
    model = tiny_model("llama", n_layers=4)
    model.model.norm = nn.Identity()
    with pytest.raises(LacoError, match="needs one final norm beside the layer list model.layers; found none"):
        architecture_of(model)


def test_per_layer_keys_are_found_in_nested_dicts_but_not_in_frequency_or_token_lists():
    config = tiny_model("llama", n_layers=4).config
    config.window_per_layer = {"sizes": [8, 16, 8, 16]}
    config.eos_token_id = [2, 3, 4, 5]  # four token ids, not four layers
    assert per_layer_config_keys(config, 4) == ["window_per_layer.sizes"]


def test_phi3_longrope_factors_are_not_taken_for_per_layer_lists(tmp_path):
    """Phi-3's longrope factors hold head_dim / 2 entries, here 8, as many as the layers."""
    from transformers import AutoModelForCausalLM, Phi3Config

    factors = [1.0 + i / 10 for i in range(8)]
    config = Phi3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=8, num_attention_heads=4,
                        num_key_value_heads=2, vocab_size=260, max_position_embeddings=512,
                        original_max_position_embeddings=128, pad_token_id=0,
                        rope_parameters={"rope_type": "longrope", "long_factor": factors, "short_factor": factors,
                                         "rope_theta": 10000.0})
    model = AutoModelForCausalLM.from_config(config).eval()
    delete_layers(model, [1, 2])
    assert model.config.rope_parameters["long_factor"] == factors
    model.save_pretrained(tmp_path)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, model(ids).logits, rtol=0, atol=0)


def test_every_layer_must_match_the_first():
    loaded = tiny_loaded("llama", n_layers=4)
    loaded.model.model.layers[2].mlp.extra_proj = nn.Linear(4, 4)
    with pytest.raises(LacoError, match="this variant is not supported"):
        architecture_of(loaded.model)
