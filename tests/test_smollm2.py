"""Full prunes of the real embedded SmolLM2-135M-Instruct (30 layers), one per merge mode."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from laco.calibration import default_sentences
from laco.collapse import CollapseConfig
from laco.prune import prune_laco
from laco.saving import save_pruned

pytestmark = pytest.mark.smollm2

PROMPT = "The three primary colours are"


def greedy(model, tokenizer, use_cache=True, n=16):
    ids = tokenizer(PROMPT, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, use_cache=use_cache,
                         pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1]:].tolist()


@pytest.mark.parametrize("merge", ["reference", "paper", "drop"])
def test_full_prune_saves_reloads_and_generates_alike(smollm2, merge, tmp_path):
    loaded = smollm2()
    result, record = prune_laco(loaded, CollapseConfig(C=4, L=1, I=2, T=0.65, merge=merge), default_sentences(),
                                compare_engines=(merge == "reference"), progress=False)
    model = loaded.model
    assert result.config.H == 30 and result.steps[0].pointer == 26
    assert model.config.num_hidden_layers == len(model.model.layers) == result.n_layers_after
    if merge == "paper":  # Eq. 1 taken literally: similarity collapses, nothing is accepted
        assert max(s.similarity for s in result.steps) < 0.5 and result.n_layers_after == 30
    else:
        assert result.n_layers_after < 30 and record["parameters"]["pruning_ratio"] > 0.05
    if merge == "reference":
        comparison = record["engine_comparison"]
        assert comparison["same_decisions"] and comparison["max_similarity_difference"] < 1e-5

    in_memory = greedy(model, loaded.tokenizer)
    assert greedy(model, loaded.tokenizer, use_cache=False) == in_memory
    save_pruned(model, loaded.tokenizer, tmp_path / "out", record)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()  # stock transformers only
    assert reloaded.config.num_hidden_layers == result.n_layers_after
    assert greedy(reloaded, AutoTokenizer.from_pretrained(tmp_path / "out")) == in_memory


def test_embedded_model_provenance(smollm2):
    loaded = smollm2()
    assert loaded.source.kind == "embedded"
    assert loaded.source.model_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert len(loaded.source.sha256) == 64
    assert loaded.model.config.num_hidden_layers == 30
    with torch.no_grad():
        logits = loaded.model(**loaded.tokenizer("The capital of France is", return_tensors="pt")).logits
    assert torch.isfinite(logits).all()
    assert loaded.tokenizer.decode(logits[0, -1].argmax()).strip() == "Paris"
