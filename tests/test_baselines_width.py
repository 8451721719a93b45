"""Width baselines (LLM-Pruner, SliceGPT) on tiny random models.

Granules: LLM-Pruner removes whole KV groups and MLP channels, the same number in every pruned
layer, and meets a ratio to within one MLP channel in every pruned layer (3 x hidden parameters
each); SliceGPT slices every basis to one width and meets a ratio to within one hidden dimension
(the parameters that one more dimension adds).
"""

import pytest
import torch
from conftest import tiny_loaded, tiny_model
from transformers import AutoModelForCausalLM

from laco import LacoError
from laco.baselines import llm_pruner, slicegpt
from laco.calibration import default_sentences, tokenize
from laco.pruners import get_pruner, load_pruned
from laco.saving import save_pruned
from laco.surgery import decoder_layers, parameter_count

SENTENCES = default_sentences()[:6]


def logits(model, tokenizer):
    batch = tokenize(tokenizer, ["A short test sentence.", "Another one, a little longer than the first."])
    with torch.no_grad():
        return model(**batch).logits


def generates_alike_with_and_without_cache(model, tokenizer):
    """Pruned layers with fewer KV heads, or sliced widths, must work with the KV cache."""
    ids = tokenizer(["Hello there"], return_tensors="pt")
    greedy = [model.generate(**ids, max_new_tokens=8, min_new_tokens=8, do_sample=False, use_cache=cache,
                             pad_token_id=tokenizer.pad_token_id)[0].tolist() for cache in (True, False)]
    return greedy[0] == greedy[1]


def save_and_reload(out, tokenizer, folder):
    save_pruned(out.model, tokenizer, folder, out.record)
    model, tok, record = load_pruned(folder)
    return logits(model, tok), record


# ---- LLM-Pruner ---------------------------------------------------------------------------------

@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
def test_llm_pruner_meets_ratio_within_one_channel_per_pruned_layer(model_type, tmp_path):
    loaded = tiny_loaded(model_type, n_layers=8)
    total = parameter_count(loaded.model)
    originals = {i: {k: v.clone() for k, v in layer.state_dict().items()} for i, layer in enumerate(decoder_layers(loaded.model))}
    out = get_pruner("llm-pruner")(loaded, SENTENCES, target_ratio=0.25, progress=False)
    record = out.record

    start, end = record["config"]["layer_range"]
    assert (start, end) == (1, 7)  # round(4*8/32)=1 .. min(7, round(30*8/32)=8): first and last kept
    granule = (end - start) * 3 * 64
    assert record["granule_parameters"] == granule
    removed = total - parameter_count(out.model)
    assert abs(removed - 0.25 * total) <= granule
    assert record["parameters"]["after"] == total - removed
    widths = record["layer_widths"]
    drop = record["removed_per_layer"]
    for i, layer in enumerate(decoder_layers(out.model)):
        if start <= i < end:
            assert widths[i] == {"kv_heads": 2 - drop["kv_groups"], "attention_heads": 2 * (2 - drop["kv_groups"]),
                                 "intermediate_size": 128 - drop["mlp_channels"]}
            assert layer.self_attn.q_proj.out_features == 16 * widths[i]["attention_heads"]
            assert layer.self_attn.o_proj.in_features == layer.self_attn.q_proj.out_features
        else:  # untouched
            torch.testing.assert_close(layer.state_dict(), originals[i], rtol=0, atol=0)
    assert drop["mlp_channels"] > 0
    assert record["loader"] == llm_pruner.LOADER and record["loadable"]["transformers"] is False
    # vLLM: the out-of-tree model of bench/vllm_models.py, built on vLLM's Llama
    assert record["loadable"]["vllm"] is (model_type == "llama")
    assert llm_pruner.VLLM_ARCHITECTURE in record["loadable"]["reason"]
    assert "deviation" not in record and record["config"]["uniform"] is False
    assert generates_alike_with_and_without_cache(out.model, loaded.tokenizer)

    before = logits(out.model, loaded.tokenizer)
    assert torch.isfinite(before).all()
    after, reread = save_and_reload(out, loaded.tokenizer, tmp_path / "out")
    torch.testing.assert_close(after, before)
    assert reread["layer_widths"] == widths


def test_llm_pruner_keeps_the_units_of_highest_taylor_importance():
    loaded = tiny_loaded("llama", n_layers=6)
    model = loaded.model
    batch = tokenize(loaded.tokenizer, SENTENCES)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    model(**batch, labels=labels).loss.backward()  # gradients by hand, then the expected ranking of layer 2
    mlp = decoder_layers(model)[2].mlp
    score = sum((lin.weight * lin.weight.grad).abs().sum(1) for lin in (mlp.gate_proj, mlp.up_proj))
    score = score + (mlp.down_proj.weight * mlp.down_proj.weight.grad).abs().sum(0)
    gate_before = mlp.gate_proj.weight.detach().clone()
    model.zero_grad(set_to_none=True)

    out = get_pruner("llm-pruner")(loaded, SENTENCES, target_ratio=0.2, progress=False)
    kept = decoder_layers(out.model)[2].mlp.gate_proj.weight
    expected = torch.topk(score, kept.shape[0]).indices.sort().values
    torch.testing.assert_close(kept, gate_before[expected])
    assert all(p.grad is None for p in out.model.parameters())


def test_llm_pruner_uniform_widths_give_a_standard_config(tmp_path):
    loaded = tiny_loaded("llama", n_layers=6)
    out = get_pruner("llm-pruner")(loaded, SENTENCES, target_ratio=0.35, layer_start=0, layer_end=6, progress=False)
    record, config = out.record, out.model.config
    assert record["loader"] == "transformers" and record["loadable"]["vllm"] is True
    assert record["removed_per_layer"]["kv_groups"] == 1  # round(p * 2) with p ~ 0.4 of each layer
    assert (config.num_key_value_heads, config.num_attention_heads, config.head_dim) == (1, 2, 16)
    assert config.intermediate_size == record["layer_widths"][0]["intermediate_size"] < 128
    before = logits(out.model, loaded.tokenizer)
    save_pruned(out.model, loaded.tokenizer, tmp_path / "out", record)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()  # no project loader involved
    torch.testing.assert_close(logits(stock, loaded.tokenizer), before)


def test_llm_pruner_uniform_prunes_every_layer_alike_and_records_the_deviation(tmp_path):
    loaded = tiny_loaded("llama", n_layers=8)
    total = parameter_count(loaded.model)
    out = get_pruner("llm-pruner")(loaded, SENTENCES, target_ratio=0.25, uniform=True, progress=False)
    record = out.record
    assert record["config"]["layer_range"] == [0, 8] and record["config"]["uniform"] is True
    assert "4..30" in record["deviation"]  # the paper's layer range it departs from
    assert all(w == record["layer_widths"][0] for w in record["layer_widths"])
    assert record["layer_widths"][0]["intermediate_size"] < 128
    assert abs(total - parameter_count(out.model) - 0.25 * total) <= record["granule_parameters"] == 8 * 3 * 64
    assert record["loader"] == "transformers" and record["loadable"] == {"transformers": True, "vllm": True,
                                                                         "reason": "standard config and tensor shapes"}
    before = logits(out.model, loaded.tokenizer)
    save_pruned(out.model, loaded.tokenizer, tmp_path / "out", record)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
    torch.testing.assert_close(logits(stock, loaded.tokenizer), before)


def test_llm_pruner_input_errors():
    with pytest.raises(LacoError, match="needs a target"):
        get_pruner("llm-pruner")(tiny_loaded("llama", n_layers=6), SENTENCES)
    with pytest.raises(LacoError, match="more than all"):
        get_pruner("llm-pruner")(tiny_loaded("llama", n_layers=6), SENTENCES, target_ratio=0.9)
    with pytest.raises(LacoError, match="does not fit"):
        get_pruner("llm-pruner")(tiny_loaded("llama", n_layers=6), SENTENCES, target_ratio=0.1, layer_end=9)
    with pytest.raises(LacoError, match="uniform prunes every layer"):
        get_pruner("llm-pruner")(tiny_loaded("llama", n_layers=6), SENTENCES, target_ratio=0.1, uniform=True, layer_start=1)



def test_reshaped_outputs_refuse_remote_code_and_device_map(tmp_path):
    """A device_map or remote code would be ignored by the reshaping loaders; say so instead."""
    loaded = tiny_loaded("llama", n_layers=8)
    out = get_pruner("llm-pruner")(loaded, SENTENCES, target_ratio=0.25, progress=False)
    save_pruned(out.model, loaded.tokenizer, tmp_path / "out", out.record)
    assert out.record["loader"] != "transformers"
    for kwargs in ({"device_map": "auto"}, {"trust_remote_code": True}):
        with pytest.raises(LacoError, match="stock-shaped outputs only"):
            load_pruned(tmp_path / "out", **kwargs)
    assert load_pruned(tmp_path / "out")[0].config.num_hidden_layers == 8

# ---- SliceGPT -----------------------------------------------------------------------------------

def tied_llama(n_layers=6):
    from laco.architectures import architecture_of
    from laco.loading import LoadedModel, ModelSource

    loaded = tiny_loaded("llama", n_layers)
    model = tiny_model("llama", n_layers)
    model.config.tie_word_embeddings = True
    model.lm_head.weight = model.model.embed_tokens.weight
    return LoadedModel(model, loaded.tokenizer, ModelSource("tiny-tied", "config", "tiny-tied"), architecture_of(model))


@pytest.mark.parametrize("variant", ["llama", "qwen2", "tied"])
def test_slicegpt_rotation_without_slicing_keeps_the_function(variant, tmp_path):
    loaded = tied_llama() if variant == "tied" else tiny_loaded(variant, n_layers=6)
    dense = logits(loaded.model, loaded.tokenizer)
    out = get_pruner("slicegpt")(loaded, SENTENCES, slicing=0.0, progress=False)
    assert out.record["sliced_width"] == 64 and out.record["untied_embeddings"] is (variant == "tied")
    rotated = logits(out.model, loaded.tokenizer)
    torch.testing.assert_close(rotated, dense, rtol=1e-4, atol=1e-4)
    for layer in decoder_layers(out.model):  # unsliced shortcuts Q_in^T Q_out are rotations
        s = layer.attn_shortcut.weight.double()
        torch.testing.assert_close(s @ s.T, torch.eye(64, dtype=torch.float64), rtol=0, atol=1e-5)
    after, _ = save_and_reload(out, loaded.tokenizer, tmp_path / "out")
    torch.testing.assert_close(after, rotated)


@pytest.mark.parametrize("variant", ["llama", "qwen2", "tied"])
def test_slicegpt_meets_ratio_within_one_dimension_and_reloads(variant, tmp_path):
    loaded = tied_llama() if variant == "tied" else tiny_loaded(variant, n_layers=6)
    total = parameter_count(loaded.model)
    out = get_pruner("slicegpt")(loaded, SENTENCES, target_ratio=0.2, progress=False)
    record, model = out.record, out.model
    width = record["sliced_width"]
    assert width < 64 and record["config"]["slicing"] == pytest.approx(1 - width / 64)
    removed = total - parameter_count(model)
    assert record["parameters"]["after"] == parameter_count(model)
    assert abs(removed - 0.2 * total) <= record["granule_parameters"]
    assert model.model.embed_tokens.weight.shape == (260, width) and model.lm_head.weight.shape == (260, width)
    for layer in decoder_layers(model):
        assert layer.self_attn.q_proj.in_features == layer.mlp.gate_proj.in_features == width
        assert layer.self_attn.o_proj.out_features == layer.mlp.down_proj.out_features == width
        assert layer.attn_shortcut.weight.shape == layer.mlp_shortcut.weight.shape == (width, width)
        assert layer.self_attn.q_proj.out_features == 64  # heads untouched
    assert record["loader"] == slicegpt.LOADER and record["loadable"]["transformers"] is False
    assert record["loadable"]["vllm"] is (variant != "qwen2")  # bench/vllm_models.py builds on vLLM's Llama
    assert slicegpt.VLLM_ARCHITECTURE in record["loadable"]["reason"]
    assert record["calibration_tokens"] == int(tokenize(loaded.tokenizer, SENTENCES)["attention_mask"].sum())
    assert generates_alike_with_and_without_cache(model, loaded.tokenizer)

    before = logits(model, loaded.tokenizer)
    assert torch.isfinite(before).all()
    after, _ = save_and_reload(out, loaded.tokenizer, tmp_path / "out")
    torch.testing.assert_close(after, before)


def test_slicegpt_parameter_formula_matches_the_sliced_model():
    loaded = tied_llama()
    for width in (17, 40):
        fresh = tied_llama()
        slicegpt.untie_and_fold_norms(fresh.model)
        expected = slicegpt.sliced_parameter_count(fresh.model, width)
        out = get_pruner("slicegpt")(fresh, SENTENCES, slicing=1 - width / 64, progress=False)
        assert out.record["sliced_width"] == width and parameter_count(out.model) == expected
    with pytest.raises(LacoError, match="not both"):
        get_pruner("slicegpt")(loaded, SENTENCES, slicing=0.1, target_ratio=0.1)
