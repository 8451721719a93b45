"""Merge modes checked against an independent computation on the models' state dicts."""

import pytest
import torch
from conftest import tiny_loaded

from laco.architectures import check_layer, merged_parameters
from laco.merge import MERGE_MODES

MERGED_SUFFIXES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def layer_state(model, i):
    prefix = f"model.layers.{i}."
    return {k[len(prefix):]: v.clone() for k, v in model.state_dict().items() if k.startswith(prefix)}


def is_merged(name):
    return name.rsplit(".", 1)[0].split(".")[-1] in MERGED_SUFFIXES


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral"])
@pytest.mark.parametrize("base,k", [(2, 3), (5, 2), (6, 1)])
def test_paper_mode_is_eq1(model_type, base, k):
    loaded = tiny_loaded(model_type)
    layers = list(loaded.model.model.layers)
    states = [layer_state(loaded.model, i) for i in range(len(layers))]
    merged = MERGE_MODES["paper"](loaded.arch, layers, base, k).state_dict()
    for name, value in merged.items():
        theta = states[base][name]
        if is_merged(name):  # Eq. 1 written as (1 - K) * theta_l + sum of the K layers above
            expected = (1 - k) * theta + sum(states[base + i][name] for i in range(1, k + 1))
        else:
            expected = theta
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6, msg=name)
    # the source layers are untouched
    for i in range(len(layers)):
        for name, value in layer_state(loaded.model, i).items():
            assert torch.equal(value, states[i][name])


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3"])
def test_reference_mode_holds_top_layer_under_base_norms(model_type):
    loaded = tiny_loaded(model_type)
    layers = list(loaded.model.model.layers)
    base, k = 3, 3
    top, low = layer_state(loaded.model, base + k), layer_state(loaded.model, base)
    merged = MERGE_MODES["reference"](loaded.arch, layers, base, k).state_dict()
    for name, value in merged.items():
        expected = top[name] if is_merged(name) else low[name]
        torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-6, msg=name)


def test_drop_mode_keeps_the_base_layer():
    loaded = tiny_loaded("llama")
    layers = list(loaded.model.model.layers)
    assert MERGE_MODES["drop"](loaded.arch, layers, 2, 3) is layers[2]


def test_qwen2_biases_and_qwen3_norms_are_named():
    qwen2 = tiny_loaded("qwen2")
    names = set(merged_parameters(qwen2.arch, qwen2.model.model.layers[0]))
    assert {"self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"} <= names
    assert "self_attn.o_proj.bias" not in names  # Qwen2's o_proj has no bias
    qwen3 = tiny_loaded("qwen3")
    names = set(merged_parameters(qwen3.arch, qwen3.model.model.layers[0]))
    assert not any("norm" in n for n in names)
    assert len(names) == 7  # four attention and three MLP weights, no biases


def test_unknown_linear_module_is_refused():
    loaded = tiny_loaded("llama")
    layer = loaded.model.model.layers[0]
    layer.mlp.extra_proj = torch.nn.Linear(4, 4)
    with pytest.raises(Exception, match="not supported"):
        check_layer(loaded.arch, layer)  # the architecture read from the model before the change
