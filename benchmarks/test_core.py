"""Timings of the core on SmolLM2-135M: the LaCo search (cached vs naive engine, same input, same
decisions), one candidate's similarity, one merge, surgery plus save, one decode step per depth.

Each benchmark times the call alone: copies of the model are made in pytest-benchmark's
untimed `setup`. Round counts are fixed (pedantic mode) where one call takes seconds."""

from __future__ import annotations

import copy
import inspect

import pytest
import torch

from benchmarks.conftest import DECODE, SEARCH, search_ratio, stats_of
from laco.collapse import CollapseConfig, DenseTrace, _CachedEngine, collapse
from laco.merge import MERGE_MODES
from laco.surgery import decoder_layers, delete_layers

# the smollm2-135m profile's LaCo setting
CONFIG = CollapseConfig(C=4, L=1, I=2, T=0.65, merge="reference")
SEARCH_ROUNDS = {"naive": 3, "cached": 5}


def decisions(result) -> list[tuple]:
    return [(s.pointer, s.k, s.accepted) for s in result.steps]


@pytest.fixture(scope="module")
def reference_decisions(smollm2, calibration, fresh_model):
    """The decisions of one untimed cached search, which every timed search must repeat."""
    return decisions(collapse(fresh_model(), calibration, smollm2.arch, CONFIG, engine="cached", progress=False))


@pytest.mark.parametrize("engine", ["naive", "cached"])  # naive first: the cached run reports the ratio
def test_laco_search(benchmark, engine, smollm2, calibration, fresh_model, reference_decisions):
    benchmark.group = "laco-search"

    def setup():
        return (fresh_model(), calibration, smollm2.arch, CONFIG), {"engine": engine, "progress": False}

    result = benchmark.pedantic(collapse, setup=setup, rounds=SEARCH_ROUNDS[engine])
    assert decisions(result) == reference_decisions, f"the {engine} engine decided differently"
    SEARCH[engine] = {**(stats_of(benchmark) or {}), "decisions": decisions(result), "steps": result.steps,
                      "layers_before": result.n_layers_before}
    benchmark.extra_info.update(layers_after=result.n_layers_after, candidates=len(result.steps))
    ratio = search_ratio()
    if engine == "cached" and ratio:
        benchmark.extra_info["speedup_vs_naive"] = ratio


def test_similarity_of_one_candidate(benchmark, smollm2, calibration):
    """Merge 3 layers into layer 1 and run the 29-layer suffix: the costliest candidate."""
    benchmark.group = "laco-parts"
    trace = DenseTrace(smollm2.model, calibration)
    engine = _CachedEngine(trace, decoder_layers(smollm2.model), smollm2.arch, CONFIG.merge)
    similarity = benchmark.pedantic(engine.similarity, args=(1, 3), rounds=10, warmup_rounds=1)
    assert 0 < similarity <= 1


@pytest.mark.parametrize("mode", ["paper", "reference"])
def test_merge_of_four_layers(benchmark, mode, smollm2):
    benchmark.group = "laco-parts"
    layers = decoder_layers(smollm2.model)
    merged = benchmark(MERGE_MODES[mode], smollm2.arch, layers, 26, 3)
    assert merged is not layers[26]


def test_surgery_and_save(benchmark, smollm2, fresh_model, tmp_path):
    """Delete three layers and save the model with its provenance (what every depth pruner does)."""
    from laco.saving import save_pruned

    benchmark.group = "laco-parts"

    def prune_and_save(model):
        delete_layers(model, [27, 28, 29])
        return save_pruned(model, smollm2.tokenizer, tmp_path / "out", {"method": "benchmark"}, force=True)

    out = benchmark.pedantic(prune_and_save, setup=lambda: ((fresh_model(),), {}), rounds=3)
    assert (out / "laco.json").is_file()


BATCH, CONTEXT = 4, 128  # a decode step of the smollm2-135m profile's throughput batch


@pytest.mark.parametrize("layers", [30, 27, 15])
def test_decode_step(benchmark, layers, smollm2, fresh_model):
    """One new token for each of 4 sequences over a KV cache of 128 tokens, at three depths;
    extra_info holds the step's FLOPs per token (bench.flops), the compute-bound reference."""
    from transformers import DynamicCache

    from bench.flops import count_flops

    benchmark.group = "decode-step"
    model = fresh_model()
    delete_layers(model, list(range(layers, 30)))
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, model.config.vocab_size, (BATCH, CONTEXT), generator=gen)
    token = torch.randint(0, model.config.vocab_size, (BATCH, 1), generator=gen)
    prefilled = DynamicCache()
    cache_kw = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.no_grad():
        model(input_ids=prompt, **{cache_kw: prefilled}, use_cache=True, logits_to_keep=1)

    def setup():  # a copy of the prompt's cache (a step appends to it): 4 x 128 tokens, some MB
        return (copy.deepcopy(prefilled),), {}

    @torch.no_grad()
    def step(cache):
        return model(input_ids=token, **{cache_kw: cache}, use_cache=True).logits

    logits = benchmark.pedantic(step, setup=setup, rounds=20, warmup_rounds=2)
    assert logits.shape == (BATCH, 1, model.config.vocab_size)
    counted = count_flops(model, BATCH, CONTEXT, 2)
    flops_per_token = counted["decode"]["first"]["flops_per_token"]
    benchmark.extra_info.update(layers=layers, flops_per_token=flops_per_token)
    DECODE[layers] = {**(stats_of(benchmark) or {}), "flops_per_token": flops_per_token}
