"""A prune's declared work (`prune_work` beside each pruner, laco.work) against what the pruner runs: the
decoder-layer forwards counted by a global forward hook while it prunes a tiny model; and the plan's time
of a prune, composed from that work and the machine's rates (bench.plan)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conftest import FAMILIES, family_folder, tiny_config, tiny_loaded

from laco.calibration import default_sentences, tokenize
from laco.collapse import THRESHOLD_ITERATIONS, CollapseConfig
from laco.memory import shape_of
from laco.pruners import get_pruner, work_need
from laco.surgery import decoder_layers
from laco.work import WALK_SHARE_FIXED_T, WALKS_FOR_A_TARGET, collapse_work, dense_passes, walk

SENTENCES = default_sentences()[:6]
N_LAYERS = 8


def counted_prune(method: str, **params) -> tuple[int, dict, object]:
    """(decoder-layer forwards the prune ran, its record, the model's shape with the calibration batch)."""
    loaded = tiny_loaded("llama", N_LAYERS)
    layer_type = type(decoder_layers(loaded.model)[0])
    ids = tokenize(loaded.tokenizer, SENTENCES)["input_ids"]
    shape = shape_of(loaded.model, 4).calibrated(*ids.shape)
    calls = []
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: calls.append(1) if isinstance(module, layer_type) else None)
    try:
        record = get_pruner(method)(loaded, SENTENCES, progress=False, **params).record
    finally:
        hook.remove()
    return len(calls), record, shape


def test_a_walk_counts_each_candidates_suffix_as_written_out_by_hand():
    cfg = CollapseConfig(C=3, L=1, H=8, I=2)
    # all rejected: the pointer runs 5, 4, 3, 2, 1 over 8 layers, each candidate merging 2 (6 left), its
    # suffix from the pointer 1, 2, 3, 4, 5 layers
    assert walk(8, cfg, accept=False) == (15, [2, 2, 2, 2, 2])
    # all accepted: pointers 5, 3, 1 over 8 -> 6 -> 4 layers, each suffix the merged layer alone
    assert walk(8, cfg, accept=True) == (3, [2, 2, 2])
    # the naive engine runs each candidate whole: 6 layers a rejected candidate; 6, 4, 2 accepted ones
    assert walk(8, cfg, accept=False, whole=True)[0] == 5 * 6
    assert walk(8, cfg, accept=True, whole=True)[0] == 6 + 4 + 2


def test_a_search_that_rejects_every_candidate_runs_its_declared_most():
    ran, record, shape = counted_prune("laco", C=3, L=1, I=2, T=1.0, merge="reference")
    assert not any(step["accepted"] for step in record["steps"])
    work = work_need("laco", shape, C=3, L=1, I=2, T=1.0, merge="reference")
    assert ran == work.layer_forwards_range[1] == N_LAYERS + 15  # the dense pass that records every layer's input, then the walk


def test_a_search_that_accepts_every_candidate_runs_its_declared_fewest():
    ran, record, shape = counted_prune("drop", C=3, L=1, I=2, T=1e-9)
    assert all(step["accepted"] for step in record["steps"])
    work = work_need("drop", shape, C=3, L=1, I=2, T=1e-9)
    assert ran == work.layer_forwards_range[0] == N_LAYERS + 3
    assert work.memory_bytes == 0  # deletion moves no weights


def test_a_target_search_runs_within_its_declared_range():
    ran, record, shape = counted_prune("laco", target_layers=5, C=3, L=1, I=2, merge="reference")
    work = work_need("laco", shape, target_layers=5, C=3, L=1, I=2, merge="reference")
    assert work.layer_forwards_range[0] <= ran <= work.layer_forwards_range[1], (ran, work)
    assert record["threshold_search"]["distinct_candidates"] > 0


@pytest.mark.parametrize("method, expected", [("shortgpt", N_LAYERS), ("come", dense_passes(N_LAYERS, 3))])
def test_depth_baselines_run_the_layer_forwards_they_declare(method, expected):
    ran, record, shape = counted_prune(method, target_layers=N_LAYERS - 3)
    assert record["n_layers_after"] == N_LAYERS - 3
    assert ran == expected == work_need(method, shape, target_layers=N_LAYERS - 3).layer_forwards
    assert dense_passes(N_LAYERS, 3) == 8 + 7 + 6  # one dense pass over the model as it is before each merge


def test_rule_merge_runs_no_forward_and_declares_none():
    ran, _, shape = counted_prune("rule-merge", target_layers=N_LAYERS - 3, C=4, merge="reference")
    work = work_need("rule-merge", shape, target_layers=N_LAYERS - 3, C=4, merge="reference")
    assert ran == 0 == work.layer_forwards
    assert work.memory_bytes == 5 * shape.layer_bytes  # one group of 4: the 4 layers read, the merge written


def test_a_search_times_a_measured_share_of_its_all_rejected_walk():
    cfg, shape = CollapseConfig(C=3, L=1, H=8, I=2, merge="drop"), SimpleNamespace(n_layers=8, layer_params=1, layer_bytes=1)
    fixed, target = collapse_work(shape, cfg, target=False), collapse_work(shape, cfg, target=True)
    # the walks written out above: 3 forwards all accepted, 15 all rejected, after the 8 of the dense pass
    assert fixed.layer_forwards == 8 + WALK_SHARE_FIXED_T * 15 and fixed.layer_forwards_range == (8 + 3, 8 + 15)
    # a target: the all-accepted walk and a few all-rejected ones; at most every bisection walk all rejected
    assert target.layer_forwards == 8 + 3 + WALKS_FOR_A_TARGET * 15
    assert target.layer_forwards_range == (8 + 2 * 3 + 15, 8 + 3 + (2 + THRESHOLD_ITERATIONS) * 15)


def test_the_plan_times_a_prune_from_its_work_and_the_machine_rates(monkeypatch):
    """ShortGPT on the tiny model: N_LAYERS layer forwards at the probed seconds of one, its weights at the
    disk's rate; the pruning-time step repeats the work without writing."""
    shape = shape_of(tiny_loaded("llama", N_LAYERS).model, 4).calibrated(2, 16)
    sizing = sizing_of(shape, None, monkeypatch)
    method = SimpleNamespace(name="shortgpt", label="shortgpt", params={})
    prune = sizing.prune(method, 0.25, 0.75)
    writing = int(shape.weight_bytes * 0.75) / 0.5e9
    assert not prune.streamed
    assert prune.seconds == pytest.approx(N_LAYERS * 0.25 + writing)
    assert prune.flops == pytest.approx(N_LAYERS * 1e9 / N_LAYERS)
    again = sizing.measurement("shortgpt", "pruning_time", 0.75, prune)
    assert again.seconds == pytest.approx(3 * N_LAYERS * 0.25)


def test_a_prune_the_bound_streams_adds_its_layer_reads_and_states_its_streamed_memory(monkeypatch):
    """Under a max_memory below the resident figure, ShortGPT streams: each layer read once from the disk, then
    once per forward and once to write, half from the page cache (the machine holds half the model beside the
    bound) and half from the disk; its memory is the streamed formula and the reading of one tensor."""
    from laco.pruners import memory_need

    shape = shape_of(tiny_loaded("llama", N_LAYERS).model, 4).calibrated(2, 16)
    resident = sum(memory_need("shortgpt", shape, streamed=False).values())
    streamed = sum(memory_need("shortgpt", shape, streamed=True).values())
    bound = (resident + streamed) // 2  # the interpreter counted as nothing (rss_now patched)
    assert streamed < bound < resident
    monkeypatch.setattr("laco.stream.plan.rss_now", lambda: 0)
    monkeypatch.setattr("psutil.virtual_memory", lambda: SimpleNamespace(total=bound + shape.weight_bytes // 2))
    sizing = sizing_of(shape, str(bound), monkeypatch)
    sizing.rates.update(read_disk_gbps=0.1, read_cached_gbps=0.4, read_from="the test")
    prune = sizing.prune(SimpleNamespace(name="shortgpt", label="shortgpt", params={}), 0.25, 0.75)
    layer = shape.layer_bytes
    reads = N_LAYERS * layer / 0.1e9 + N_LAYERS * layer * (0.5 / 0.4e9 + 0.5 / 0.1e9)
    assert prune.streamed
    assert prune.seconds == pytest.approx(N_LAYERS * 0.25 + reads + int(shape.weight_bytes * 0.75) / 0.5e9)
    assert prune.memory >= streamed + shape.largest_tensor_params * 4  # its layer cache comes on top
    assert prune.memory < resident


def sizing_of(shape, max_memory: str | None, monkeypatch):
    """A plan's Sizing of `shape` with a layer forward of 0.25 s, 1 GFLOP a forward and a disk writing 0.5 GB/s."""
    from bench import plan as plan_module

    model = SimpleNamespace(pruning_dtype=lambda: "float32", device="cpu", device_map=None, trust_remote_code=False,
                            max_memory=max_memory, spec="tiny")
    monkeypatch.setattr("bench.probe.layer_forward_seconds", lambda *args, **kwargs: 0.25)
    sizing = plan_module.Sizing.__new__(plan_module.Sizing)
    sizing.profile = SimpleNamespace(model=model, pruning_time=SimpleNamespace(repeats=3))
    sizing.rates, sizing._layer_seconds, sizing.config = {"disk_gbps": 0.5}, {}, None
    sizing.prune_shape = lambda method: shape
    sizing.count = lambda batch, tokens, new, part: 1e9
    return sizing


@pytest.mark.parametrize("family", FAMILIES)
def test_the_layer_probe_times_a_one_layer_copy_of_every_family(family, tmp_path):
    from transformers import AutoConfig

    from bench.probe import layer_forward_seconds

    remote = family == "baichuan"  # remote code: its config comes from its folder
    config = (AutoConfig.from_pretrained(family_folder(family, tmp_path / family), trust_remote_code=True) if remote
              else tiny_config(family, N_LAYERS))
    seconds = layer_forward_seconds(config, 2, 16, "float32", trust_remote_code=remote, budget_s=0.01)
    assert seconds is not None and 0 < seconds < 5
    assert config.num_hidden_layers == N_LAYERS  # the model's own config is left as it was


def test_the_layer_probe_says_none_when_it_cannot_build_a_copy():
    from bench.probe import layer_forward_seconds

    assert layer_forward_seconds(object(), 2, 16, "float32", budget_s=0.01) is None


def test_the_plan_times_decoding_by_the_slower_of_its_flops_and_its_weights_bytes():
    """The roofline: 1 GB of weights at 10 GB/s is 0.1 s a decode step, slower than its 1 GFLOP at 100 GFLOP/s;
    a prefill of 100 GFLOP takes 1 s; 6 rounds (5 and a warm-up) of a prefill and 7 steps; a pruned model
    keeping 0.75 of the parameters takes 0.75 of each."""
    from bench import plan as plan_module

    throughput = SimpleNamespace(batch_size=1, input_len=64, output_len=8, rounds=5, warmup=1)
    sizing = plan_module.Sizing.__new__(plan_module.Sizing)
    sizing.profile = SimpleNamespace(model=SimpleNamespace(dtype="bfloat16"), throughput=throughput)
    sizing.rates, sizing.meta, sizing.weight_bytes = {"bf16_gflops": 100.0, "memory_gbps": 10.0}, "meta", 1e9
    sizing.rates["load_s_per_gb"] = 0.0  # loads: the next test
    sizing.phase_weights = {}
    sizing._flops = {(1, 64, 8): (100e9, None, 7, 1e9)}
    assert sizing.generation_seconds("throughput_hf", 1.0) == pytest.approx(6 * (1.0 + 7 * 0.1))
    assert sizing.generation_seconds("throughput_hf", 0.75) == pytest.approx(0.75 * 6 * (1.0 + 7 * 0.1))
    sizing.rates["memory_gbps"] = 1000.0  # now the FLOPs bind: 1 GFLOP at 100 GFLOP/s is 0.01 s a step
    assert sizing.generation_seconds("throughput_hf", 1.0) == pytest.approx(6 * (1.0 + 7 * 0.01))


def test_the_plan_adds_a_models_loads_once_a_memory_step_and_per_round_where_the_phase_reloads(monkeypatch):
    """2 s per GB of load on 1 GB of weights: the memory step loads once (+2 s); a throughput phase whose models
    take more than half the available memory reloads each round (6 x 2 s), one that fits loads once."""
    from bench import plan as plan_module

    memory = SimpleNamespace(batch_size=1, prompt_len=64, new_tokens=8)
    throughput = SimpleNamespace(batch_size=1, input_len=64, output_len=8, rounds=5, warmup=1)
    sizing = plan_module.Sizing.__new__(plan_module.Sizing)
    sizing.profile = SimpleNamespace(model=SimpleNamespace(dtype="bfloat16"), throughput=throughput, memory=memory)
    sizing.rates = {"bf16_gflops": 100.0, "memory_gbps": 10.0, "load_s_per_gb": 2.0}
    sizing.meta, sizing.weight_bytes, sizing._flops = "meta", 1e9, {(1, 64, 8): (100e9, None, 7, 1e9)}
    work = 1.0 + 7 * 0.1
    monkeypatch.setattr("psutil.virtual_memory", lambda: SimpleNamespace(available=3e9))
    sizing.phase_weights = {"throughput_hf": 1.75e9}  # > 0.5 x 3 GB: reloaded per round
    assert sizing.generation_seconds("memory", 1.0) == pytest.approx(work + 2.0)
    assert sizing.generation_seconds("throughput_hf", 1.0) == pytest.approx(6 * work + 6 * 2.0)
    assert sizing.generation_seconds("throughput_hf", 0.75) == pytest.approx(0.75 * (6 * work + 6 * 2.0))
    sizing.phase_weights = {"throughput_hf": 1.25e9}  # <= 1.5 GB: resident, one load
    assert sizing.generation_seconds("throughput_hf", 1.0) == pytest.approx(6 * work + 2.0)
