"""The collapse search: indexing, similarity, cached == naive, target mode, validation."""

import copy
import statistics

import pytest
import torch
from conftest import byte_tokenizer, tiny_loaded

from laco import LacoError
from laco.calibration import default_sentences, tokenize
from laco.collapse import (
    CollapseConfig,
    DenseTrace,
    collapse,
    last_hidden,
    paper_setting,
    sentence_similarities,
)
from laco.merge import MERGE_MODES


def calibration_batch():
    return tokenize(byte_tokenizer(), default_sentences()[:6])


def first_step_similarities(loaded, merge):
    """Similarity of every candidate while nothing is accepted (T=1 rejects all)."""
    result = collapse(copy.deepcopy(loaded.model), calibration_batch(), loaded.arch,
                      CollapseConfig(C=3, L=1, I=2, T=1.0, merge=merge), progress=False)
    return [s.similarity for s in result.steps]


@pytest.mark.parametrize("model_type,merge", [("llama", "reference"), ("llama", "drop"), ("llama", "paper"),
                                              ("qwen2", "reference"), ("qwen3", "drop")])
def test_cached_search_decides_as_the_naive_one(model_type, merge):
    loaded = tiny_loaded(model_type, n_layers=10)
    threshold = statistics.median(first_step_similarities(loaded, merge))
    config = CollapseConfig(C=3, L=1, I=2, T=threshold, merge=merge)
    batch = calibration_batch()
    naive_model, cached_model = copy.deepcopy(loaded.model), copy.deepcopy(loaded.model)
    naive = collapse(naive_model, batch, loaded.arch, config, engine="naive", progress=False)
    cached = collapse(cached_model, batch, loaded.arch, config, engine="cached", progress=False)
    decisions = [(s.pointer, s.k, s.accepted) for s in naive.steps]
    assert decisions == [(s.pointer, s.k, s.accepted) for s in cached.steps]
    assert {s.accepted for s in naive.steps} == {True, False}  # the comparison exercised both branches
    for a, b in zip(naive.steps, cached.steps):
        assert a.similarity == pytest.approx(b.similarity, abs=1e-5)
    assert naive.layer_sources == cached.layer_sources
    ids = batch["input_ids"]
    with torch.no_grad():
        torch.testing.assert_close(naive_model(ids).logits, cached_model(ids).logits, rtol=1e-4, atol=1e-5)


def test_pointer_starts_at_h_minus_c_and_is_zero_based():
    loaded = tiny_loaded("llama", n_layers=8)
    result = collapse(loaded.model, calibration_batch(), loaded.arch,
                      CollapseConfig(C=4, L=1, I=2, T=1.0), progress=False)
    assert [(s.pointer, s.k, s.layers) for s in result.steps[:2]] == [(4, 3, [4, 5, 6, 7]), (3, 3, [3, 4, 5, 6])]
    assert result.steps[-1].pointer == 1  # L=1 is the lowest base; layer 0 is never merged
    assert result.n_layers_after == 8


def test_accepted_merge_moves_pointer_by_i_and_records_sources():
    loaded = tiny_loaded("llama", n_layers=8)
    result = collapse(loaded.model, calibration_batch(), loaded.arch,
                      CollapseConfig(C=3, L=1, I=3, T=1e-9, merge="drop"), progress=False)
    # every candidate is accepted: 5 <- 6,7 ; pointer 2 <- 3,4 ; pointer -1 stops
    assert [(s.pointer, s.k, s.accepted) for s in result.steps] == [(5, 2, True), (2, 2, True)]
    assert result.layer_sources == [[0], [1], [2, 3, 4], [5, 6, 7]]
    assert loaded.model.config.num_hidden_layers == 4


def test_paper_table8_mapping():
    cfg = paper_setting("llama2-7b", 32)
    assert (cfg.C, cfg.L, cfg.H, cfg.I, cfg.T) == (4, 1, 32, 2, 0.65)
    assert paper_setting("llama2-7b", 30).H == 30  # scaled to a 30-layer model
    assert paper_setting("llama2-13b").C == 6 and paper_setting("llama2-13b").T == 0.75
    assert paper_setting("baichuan2-7b").T == 0.70


def test_batched_similarity_equals_one_sentence_at_a_time():
    loaded = tiny_loaded("qwen2", n_layers=8)
    sentences = default_sentences()
    tok = byte_tokenizer()
    candidate = copy.deepcopy(loaded.model)
    layers = list(candidate.model.layers)
    merged = MERGE_MODES["reference"](loaded.arch, layers, 3, 3)
    candidate.model.layers = torch.nn.ModuleList(layers[:3] + [merged] + layers[7:])
    candidate.config.num_hidden_layers = 5
    candidate.config.layer_types = [candidate.config.layer_types[i] for i in (0, 1, 2, 3, 7)]

    batch = tokenize(tok, sentences)
    assert batch["attention_mask"].min() == 0  # the batch really is padded
    batched = sentence_similarities(last_hidden(candidate, batch), last_hidden(loaded.model, batch),
                                    batch["attention_mask"])
    single = []
    for s in sentences:
        one = tokenize(tok, [s])
        single.append(sentence_similarities(last_hidden(candidate, one), last_hidden(loaded.model, one),
                                            one["attention_mask"]).item())
    assert batched.tolist() == pytest.approx(single, abs=1e-4)
    assert max(single) - min(single) > 1e-3  # per-sentence values differ, so a mix-up would show


def test_dense_trace_suffix_reproduces_the_full_forward():
    loaded = tiny_loaded("qwen2", n_layers=8)
    batch = calibration_batch()
    trace = DenseTrace(loaded.model, batch)
    layers = list(loaded.model.model.layers)
    for start in (0, 3, 7):
        torch.testing.assert_close(trace.run_suffix(layers[start:], start), trace.output, rtol=0, atol=0)


def test_target_layers_reached_by_threshold_search():
    loaded = tiny_loaded("llama", n_layers=12)
    result = collapse(loaded.model, calibration_batch(), loaded.arch,
                      CollapseConfig(C=3, L=1, I=2, merge="drop"), target_layers=8, progress=False)
    search = result.threshold_search
    assert result.n_layers_after == search["achieved_layers"] <= 8
    assert result.config.T == search["T"]
    assert any(t["layers"] > 8 for t in search["trials"])  # the bisection saw both sides
    assert loaded.model.config.num_hidden_layers == result.n_layers_after


def test_unreachable_target_is_an_error():
    loaded = tiny_loaded("llama", n_layers=8)
    with pytest.raises(LacoError, match="cannot reach 2 layers"):
        collapse(loaded.model, calibration_batch(), loaded.arch, CollapseConfig(C=3, L=3), target_layers=2,
                 progress=False)


@pytest.mark.parametrize("kwargs,message", [
    ({"C": 1}, "C must be at least 2"),
    ({"T": 0.0}, r"T must lie in \(0, 1\]"),
    ({"T": 1.5}, r"T must lie in \(0, 1\]"),
    ({"L": 6, "H": 5}, "must not exceed H"),
    ({"H": 9}, "beyond the model's 8 layers"),
    ({"merge": "average"}, "unknown merge mode"),
    ({"C": 4, "L": 5}, "nothing to search"),
])
def test_invalid_configs(kwargs, message):
    with pytest.raises(LacoError, match=message):
        CollapseConfig(**kwargs).resolved(8)
