"""Depth baselines (drop, rule-merge, ShortGPT, CoMe) on tiny random models.

Granule: one decoder layer. A ratio target is turned into a layer count, so the parameters
removed may differ from the requested fraction by at most one layer's parameters.
"""

import pytest
import torch
from conftest import tiny_loaded

from laco import LacoError
from laco.baselines.come import concat_merge
from laco.baselines.common import layer_profile
from laco.calibration import default_sentences, tokenize
from laco.merge import paper_merge
from laco.pruners import PRUNERS, get_pruner, load_pruned
from laco.saving import save_pruned
from laco.surgery import decoder_layers, parameter_count

DEPTH = ["drop", "rule-merge", "shortgpt", "come"]
SENTENCES = default_sentences()[:6]


def logits(model, tokenizer):
    batch = tokenize(tokenizer, ["A short test sentence.", "Another one, a little longer than the first."])
    with torch.no_grad():
        return model(**batch).logits


def layer_state(layer):
    return {k: v.clone() for k, v in layer.state_dict().items()}


def test_every_registered_pruner_resolves():
    for name in PRUNERS:
        assert callable(get_pruner(name))
    with pytest.raises(LacoError, match="did you mean 'shortgpt'"):
        get_pruner("shortgtp")


@pytest.mark.parametrize("model_type", ["llama", "qwen2"])
@pytest.mark.parametrize("method", DEPTH)
def test_depth_pruner_meets_ratio_within_one_layer_and_reloads(method, model_type, tmp_path):
    loaded = tiny_loaded(model_type, n_layers=8)
    model = loaded.model
    shapes = {k: v.shape for k, v in decoder_layers(model)[0].state_dict().items()}
    per_layer, total = parameter_count(decoder_layers(model)[0]), parameter_count(model)
    out = get_pruner(method)(loaded, SENTENCES, target_ratio=0.3, progress=False)
    record = out.record

    removed = total - parameter_count(out.model)
    assert abs(removed - 0.3 * total) <= per_layer
    assert record["parameters"] == pytest.approx({"before": total, "after": total - removed,
                                                  "kept_ratio": 1 - removed / total, "pruning_ratio": removed / total})
    n_left = 8 - removed // per_layer
    assert removed % per_layer == 0 and out.model.config.num_hidden_layers == len(decoder_layers(out.model)) == n_left
    for layer in decoder_layers(out.model):  # depth methods never change a layer's shapes
        assert {k: v.shape for k, v in layer.state_dict().items()} == shapes
    assert record["method"] == method and record["target"]["ratio"] == 0.3
    assert record["loader"] == "transformers" and record["loadable"]["vllm"] is True
    assert record["prune_seconds"] > 0 and len(record["fingerprint"]) == 16
    assert record["calibration"]["sentences"] == len(SENTENCES)

    before = logits(out.model, loaded.tokenizer)
    assert torch.isfinite(before).all()
    save_pruned(out.model, loaded.tokenizer, tmp_path / "out", record)
    reloaded, tokenizer, reread = load_pruned(tmp_path / "out")
    torch.testing.assert_close(logits(reloaded, tokenizer), before)
    assert reread["fingerprint"] == record["fingerprint"]


def test_shortgpt_deletes_the_layers_of_least_block_influence():
    loaded = tiny_loaded("llama", n_layers=8)
    batch = tokenize(loaded.tokenizer, SENTENCES)
    with torch.no_grad():  # BI from transformers' own hidden states: entry i enters layer i
        hidden = loaded.model(**batch, output_hidden_states=True).hidden_states
    mask = batch["attention_mask"].bool()
    expected = [(1 - torch.cosine_similarity(hidden[i], hidden[i + 1], dim=-1))[mask].mean().item() for i in range(7)]
    originals = [layer_state(layer) for layer in decoder_layers(loaded.model)]

    record = get_pruner("shortgpt")(loaded, SENTENCES, target_layers=5, progress=False).record
    assert record["block_influence"][:7] == pytest.approx(expected, abs=1e-5)  # the last one meets the final norm
    order = sorted(range(8), key=record["block_influence"].__getitem__)
    assert record["removed_layers"] == sorted(order[:3])
    kept = [i for i in range(8) if i not in record["removed_layers"]]
    for layer, i in zip(decoder_layers(loaded.model), kept, strict=True):
        torch.testing.assert_close(layer.state_dict(), originals[i], rtol=0, atol=0)
        assert layer.self_attn.layer_idx == kept.index(i)


def test_rule_merge_merges_fixed_groups_from_the_top_by_eq1():
    loaded = tiny_loaded("llama", n_layers=8)
    originals = list(decoder_layers(loaded.model))
    expected_top = paper_merge(loaded.arch, originals, 5, 2).state_dict()
    record = get_pruner("rule-merge")(loaded, SENTENCES, target_layers=6, C=4, progress=False).record
    # two deletions with C=4: one group of three, layers 5..7 into 5; nothing in the bottom half
    assert record["layer_sources"] == [[0], [1], [2], [3], [4], [5, 6, 7]]
    assert record["merge_mode"] == "paper" and record["config"]["C"] == 4
    torch.testing.assert_close(decoder_layers(loaded.model)[5].state_dict(), expected_top)
    assert all(decoder_layers(loaded.model)[i] is originals[i] for i in range(5))

    loaded = tiny_loaded("llama", n_layers=8)  # 8 -> 6 layers by C=2 needs groups 6-7 and 4-5: still the top half
    assert get_pruner("rule-merge")(loaded, SENTENCES, target_layers=6, C=2).record["layer_sources"][4:] == [[4, 5], [6, 7]]
    with pytest.raises(LacoError, match="bottom half"):
        get_pruner("rule-merge")(tiny_loaded("llama", n_layers=8), SENTENCES, target_layers=3, C=4)


def test_drop_keeps_original_layers_unchanged_and_names_itself():
    loaded = tiny_loaded("llama", n_layers=8)
    originals = [layer_state(layer) for layer in decoder_layers(loaded.model)]
    record = get_pruner("drop")(loaded, SENTENCES, target_layers=5, progress=False).record
    assert record["method"] == "drop" and record["merge_mode"] == "drop"
    assert record["threshold_search"]["achieved_layers"] == 5
    sources = record["layer_sources"]
    for layer, source in zip(decoder_layers(loaded.model), sources, strict=True):  # the base survives as it was
        torch.testing.assert_close(layer.state_dict(), originals[source[0]], rtol=0, atol=0)
    with pytest.raises(LacoError, match="always deletes"):
        get_pruner("drop")(loaded, SENTENCES, target_layers=4, merge="paper")


def test_come_merged_layer_concatenates_units_of_both_layers_at_the_original_width():
    loaded = tiny_loaded("qwen2", n_layers=6)  # q/k/v biases travel with their rows
    layers = decoder_layers(loaded.model)
    a, b = layers[2], layers[3]
    stats = layer_profile(loaded.model, tokenize(loaded.tokenizer, SENTENCES), channels=True).channels
    merged, detail = concat_merge(loaded.arch, a, b, stats[2], stats[3], share_a=0.5)
    assert {k: v.shape for k, v in merged.state_dict().items()} == {k: v.shape for k, v in a.state_dict().items()}

    def rows_from(layer, name, weight_rows):
        own = layer.get_submodule(name).weight
        return sum(any(torch.equal(r, o) for o in own) for r in weight_rows)

    for name in ("mlp.gate_proj", "self_attn.k_proj"):  # 128 channels; 2 KV groups of 16 rows
        rows = merged.get_submodule(name).weight
        assert rows_from(a, name, rows) == rows_from(b, name, rows) == rows.shape[0] // 2
    assert detail["mlp_channels_from"] == [64, 64] and len(detail["kv_groups"][0]) == len(detail["kv_groups"][1]) == 1
    g_a, g_b = detail["kv_groups"][0][0], detail["kv_groups"][1][0]
    torch.testing.assert_close(merged.self_attn.k_proj.bias[:16], a.self_attn.k_proj.bias[g_a * 16 : g_a * 16 + 16])
    torch.testing.assert_close(merged.self_attn.q_proj.weight[32:], b.self_attn.q_proj.weight[g_b * 32 : g_b * 32 + 32])
    torch.testing.assert_close(merged.input_layernorm.weight, (a.input_layernorm.weight + b.input_layernorm.weight) / 2)

    all_a, _ = concat_merge(loaded.arch, a, b, stats[2], stats[3], share_a=1.0)  # everything from a: a's projections
    for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
        torch.testing.assert_close(all_a.get_submodule(name).weight, a.get_submodule(name).weight, rtol=0, atol=0)


def test_come_record_traces_every_merge():
    loaded = tiny_loaded("llama", n_layers=8)
    record = get_pruner("come")(loaded, SENTENCES, target_layers=5, progress=False).record
    assert len(record["steps"]) == 3 and sorted(i for s in record["layer_sources"] for i in s) == list(range(8))
    for step in record["steps"]:
        assert 0 <= step["share_first"] <= 1 and 0 <= step["angular_distance"] <= 1


@pytest.mark.parametrize("method", DEPTH)
def test_depth_pruner_input_errors(method):
    loaded = tiny_loaded("llama", n_layers=6)
    with pytest.raises(LacoError, match="target"):
        get_pruner(method)(loaded, SENTENCES, target_ratio=0.2, target_layers=4)
    with pytest.raises((LacoError, TypeError)):
        get_pruner(method)(loaded, SENTENCES, target_layers=4, bogus=1)



def test_a_depth_pruned_output_runs_under_accelerates_dispatch_with_layers_offloaded_to_disk(tmp_path):
    """The path of a model larger than its devices (llama2-70b's device_map), on the CPU: accelerate's hooks
    bring the offloaded layers of the pruned, re-indexed model in from disk around their forward, and the
    logits are those of the model loaded whole."""
    from transformers import AutoModelForCausalLM

    loaded = tiny_loaded("llama", n_layers=8)
    out = get_pruner("shortgpt")(loaded, SENTENCES, target_layers=5, progress=False)
    save_pruned(out.model, loaded.tokenizer, tmp_path / "out", out.record)
    plain, tokenizer, _ = load_pruned(tmp_path / "out")
    device_map = {"model.embed_tokens": "cpu", "model.rotary_emb": "cpu", "model.norm": "cpu", "lm_head": "cpu",
                  **{f"model.layers.{i}": "cpu" if i < 2 else "disk" for i in range(5)}}
    mapped = AutoModelForCausalLM.from_pretrained(tmp_path / "out", device_map=device_map,
                                                  offload_folder=tmp_path / "offload")
    assert mapped.hf_device_map == device_map and hasattr(decoder_layers(mapped)[4], "_hf_hook")
    torch.testing.assert_close(logits(mapped, tokenizer), logits(plain, tokenizer))
