"""Every decoder family on a tiny seeded random config, through the generic rules of
`laco.architectures` and `laco.surgery`: prune with every merge mode, save, reload with stock
`from_pretrained`, per-layer config at the new depth, greedy generation with and without the KV
cache, and the hidden states below the merge untouched. Then every baseline on every family: it
works, or it refuses in one line.

The pruning is fixed so the expected model can be computed independently: LaCo with C=3, L=2,
H=6, I=3 and T=1e-9 accepts its first candidate, layers 3, 4, 5 into 3, and stops (the pointer
falls below L), so the 8 layers become original layers 0, 1, 2, 3(+4, 5), 6, 7.
"""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILIES, family_folder

from laco import LacoError
from laco.calibration import default_sentences, tokenize
from laco.loading import load_model
from laco.pruners import get_pruner, load_pruned
from laco.saving import save_pruned

SENTENCES = default_sentences()[:6]
KEPT = [0, 1, 2, 3, 6, 7]  # origin of each output layer
BASE, ABOVE = 3, (4, 5)
LACO = {"C": 3, "L": 2, "H": 6, "I": 3, "T": 1e-9}
PROMPT = torch.tensor([[1, 40, 41, 42, 43, 44, 45, 46]])  # 8 tokens; 12 more pass the sliding window of 16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("families")
    return {family: family_folder(family, root / f"tiny-{family}") for family in FAMILIES}


def load(folder, family):
    return load_model(str(folder), trust_remote_code=family == "baichuan")


def stock_reload(folder, family):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=family == "baichuan").eval()


def per_layer_lists(config_dict: dict, n: int, prefix: str = "") -> dict[str, list]:
    """Every list of length n in a config dict, nested dicts included (written apart from the code)."""
    out = {}
    for key, value in config_dict.items():
        if isinstance(value, list) and len(value) == n and key not in ("architectures",):
            out[prefix + key] = value
        elif isinstance(value, dict):
            out.update(per_layer_lists(value, n, f"{prefix}{key}."))
    return out


def layer_inputs(model, ids):
    """The hidden state entering each decoder layer, by forward pre-hooks on `model.model.layers`."""
    seen = []
    hooks = [layer.register_forward_pre_hook(lambda m, a, k: seen.append((a[0] if a else k["hidden_states"]).clone()),
                                             with_kwargs=True) for layer in model.model.layers]
    try:
        with torch.no_grad():
            model(ids)
    finally:
        for h in hooks:
            h.remove()
    return seen


def greedy(model, use_cache, n=12):
    out = model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=n, min_new_tokens=n,
                         do_sample=False, use_cache=use_cache, pad_token_id=0)
    return out[0, PROMPT.shape[1]:].tolist()


def expected_layer(states: list[dict], merge: str) -> dict:
    """Layer 3 after each merge mode: every linear weight and bias merged, every other tensor (the
    norms, whatever their names) from layer 3."""
    out = {}
    for name, theta in states[BASE].items():
        is_linear = name.endswith((".weight", ".bias")) and theta.dim() >= 1 and "norm" not in name
        if not is_linear or merge == "drop":
            out[name] = theta
        elif merge == "paper":  # Eq. 1: theta_l + sum (theta_l+i - theta_l)
            out[name] = theta + sum(states[i][name] - theta for i in ABOVE)
        else:  # reference: the notebook's update telescopes to the top layer
            out[name] = states[ABOVE[-1]][name]
    return out


@pytest.mark.parametrize("merge", ["paper", "reference", "drop"])
@pytest.mark.parametrize("family", FAMILIES)
def test_family_prunes_saves_and_reloads(family, merge, folders, tmp_path):
    loaded = load(folders[family], family)
    dense = loaded.model
    config_before = dense.config.to_dict()
    lists_before = per_layer_lists(config_before, 8)
    states = [{k: v.clone() for k, v in layer.state_dict().items()} for layer in dense.model.layers]
    ids = tokenize(loaded.tokenizer, ["The cat sat on the mat and looked at the door."])["input_ids"]
    dense_inputs = layer_inputs(dense, ids)

    record = get_pruner("laco")(loaded, SENTENCES, merge=merge, progress=False, **LACO).record
    assert record["layer_sources"] == [[0], [1], [2], [3, 4, 5], [6], [7]]
    out = save_pruned(loaded.model, loaded.tokenizer, tmp_path / "out", record)
    reloaded = stock_reload(out, family)

    assert reloaded.config.num_hidden_layers == len(reloaded.model.layers) == 6
    lists_after = per_layer_lists(reloaded.config.to_dict(), 6)
    assert set(lists_after) == set(lists_before)  # nothing per-layer lost or left at the old length
    for key, old in lists_before.items():
        assert lists_after[key] == [old[i] for i in KEPT], key
    torch.testing.assert_close(reloaded.model.layers[BASE].state_dict(), expected_layer(states, merge),
                               rtol=1e-5, atol=1e-6)
    for j, origin in enumerate(KEPT):
        if origin != BASE:
            torch.testing.assert_close(reloaded.model.layers[j].state_dict(), states[origin], rtol=0, atol=0)
    assert [m.layer_idx for layer in reloaded.model.layers for m in layer.modules() if hasattr(m, "layer_idx")] == \
        [j for j in range(6) for m in reloaded.model.layers[j].modules() if hasattr(m, "layer_idx")]

    with torch.no_grad():
        torch.testing.assert_close(reloaded(ids).logits, loaded.model(ids).logits, rtol=0, atol=0)
    pruned_inputs = layer_inputs(reloaded, ids)
    for i in range(BASE + 1):  # layers 0..2 and the merge base see exactly the dense model's hidden states
        torch.testing.assert_close(pruned_inputs[i], dense_inputs[i], rtol=0, atol=0)
    assert greedy(reloaded, use_cache=True) == greedy(reloaded, use_cache=False)


def test_gemma3_pattern_and_qwen2_window_threshold_follow_the_depth(folders, tmp_path):
    """Integers that summarise layer_types are recomputed from the new list (or cleared)."""
    gemma = load(folders["gemma3_text"], "gemma3_text")
    assert gemma.model.config.layer_types == ["sliding_attention", "sliding_attention", "full_attention"] * 2 + \
        ["sliding_attention"] * 2
    get_pruner("laco")(gemma, SENTENCES, progress=False, **LACO)
    # kept 0,1,2,3,6,7 -> s s F s s s: no "every p-th layer full" rule fits any more
    assert gemma.model.config.layer_types == ["sliding_attention"] * 2 + ["full_attention"] + ["sliding_attention"] * 3
    assert gemma.model.config.to_dict()["sliding_window_pattern"] is None
    assert [layer.self_attn.is_sliding for layer in gemma.model.model.layers] == [True, True, False, True, True, True]

    qwen = load(folders["qwen2"], "qwen2")
    qwen.model.config.max_window_layers = 5  # layers 5.. slide; rebuild the types that follow from it
    qwen.model.config.layer_types = ["full_attention"] * 5 + ["sliding_attention"] * 3
    for layer, kind in zip(qwen.model.model.layers, qwen.model.config.layer_types):
        layer.self_attn.sliding_window = 16 if kind == "sliding_attention" else None
    record = get_pruner("laco")(qwen, SENTENCES, progress=False, **LACO).record
    assert qwen.model.config.layer_types == ["full_attention"] * 4 + ["sliding_attention"] * 2
    assert qwen.model.config.max_window_layers == 4
    assert {"layer_types", "max_window_layers"} <= set(record["sliced_config_keys"])


# ---- baselines on every family ------------------------------------------------------------------

# What each width or concatenation method can do per family, stated apart from the code:
# packed projections (Phi-3, Baichuan) cannot be sliced by head; OLMo 2's q/k norms span all heads;
# SliceGPT needs pre-norm layers whose norms multiply by their weight, and a stock reload.
REFUSALS = {
    "come": {"phi3": "packs several", "baichuan": "packs several", "olmo2": "normalise across all heads"},
    "llm-pruner": {"phi3": "packs several", "baichuan": "packs several", "olmo2": "normalise across all heads"},
    "slicegpt": {"gemma2": "pre-norm layers", "gemma3_text": "pre-norm layers", "olmo2": "pre-norm layers",
                 "baichuan": "remote code"},
    "shortgpt": {},
}


@pytest.mark.parametrize("method", list(REFUSALS))
@pytest.mark.parametrize("family", FAMILIES)
def test_baseline_on_family_works_or_refuses_in_one_line(family, method, folders, tmp_path):
    loaded = load(folders[family], family)
    refusal = REFUSALS[method].get(family)
    if refusal:
        with pytest.raises(LacoError, match=refusal) as info:
            get_pruner(method)(loaded, SENTENCES, target_ratio=0.25, progress=False)
        assert "\n" not in str(info.value)
        return
    total = sum(p.numel() for p in loaded.model.parameters())
    out = get_pruner(method)(loaded, SENTENCES, target_ratio=0.25, progress=False)
    record = out.record
    removed = total - sum(p.numel() for p in out.model.parameters())
    assert removed == record["parameters"]["before"] - record["parameters"]["after"] > 0
    assert abs(record["parameters"]["pruning_ratio"] - 0.25) < 0.1  # one tiny layer is 1/8 of the layers
    batch = tokenize(loaded.tokenizer, ["A short test sentence.", "Another, longer one for the second row."])
    with torch.no_grad():
        before = out.model(**batch).logits
    assert torch.isfinite(before).all()
    save_pruned(out.model, loaded.tokenizer, tmp_path / "out", record)
    remote = family == "baichuan" and record["loader"] == "transformers"
    model, _, reread = load_pruned(tmp_path / "out", trust_remote_code=remote)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, before, rtol=1e-5, atol=1e-5)
    assert reread["loader"] == record["loader"]
    assert greedy(model, use_cache=True) == greedy(model, use_cache=False)
