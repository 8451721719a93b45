"""The main environment's side of the vLLM engine (bench/vllm/), without vLLM: what the worker is
told for each kind of output (each pruner declares it), the plugin its path declares, and the
refusals that come before any worker starts."""

from __future__ import annotations

import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from bench import vllm_worker
from bench.vllm import client, environment
from laco.baselines import llm_pruner, slicegpt

SETTINGS = {"python": "/nonexistent/python", "version": "0.0", "problem": None, "dtype": "float32",
            "tensor_parallel_size": 1, "max_model_len": None, "gpu_memory_utilization": 0.5, "enforce_eager": True,
            "cpu_kvcache_gib": 1}
WORKLOAD = {"batch_size": 1, "input_len": 4, "output_len": 2, "seed": 0, "device": "cpu"}


def test_stock_shaped_outputs_need_no_overrides():
    assert client.hf_overrides({}, "unused") is None  # dense
    assert client.hf_overrides({"method": "laco", "loader": "transformers"}, "unused") is None
    # LLM-Pruner with every layer pruned alike: a stock config describes it
    assert client.hf_overrides({"method": "llm-pruner", "loader": "transformers"}, "unused") is None


def test_llm_pruner_overrides_name_its_architecture_and_carry_the_widths():
    widths = [{"kv_heads": 3, "attention_heads": 9, "intermediate_size": 1536},
              {"kv_heads": 2, "attention_heads": 6, "intermediate_size": 896}]
    overrides = client.hf_overrides({"method": "llm-pruner", "loader": llm_pruner.LOADER, "layer_widths": widths}, "unused")
    assert overrides == {"architectures": ["LacoLlmPrunerForCausalLM"], "laco_layer_widths": widths}


@pytest.mark.parametrize("config, head_dim", [({"hidden_size": 576, "num_attention_heads": 9, "head_dim": 64}, 64),
                                              ({"hidden_size": 64, "num_attention_heads": 4}, 16)])
def test_slicegpt_overrides_slice_the_stream_and_keep_the_head_size(tmp_path, config, head_dim):
    (tmp_path / "config.json").write_text(json.dumps(config))
    overrides = client.hf_overrides({"method": "slicegpt", "loader": slicegpt.LOADER, "sliced_width": 333}, tmp_path)
    assert overrides == {"architectures": ["LacoSliceGPTForCausalLM"], "hidden_size": 333, "head_dim": head_dim}


def test_every_architecture_the_pruners_name_is_registered():
    assert set(vllm_worker.OUT_OF_TREE_MODELS) == {llm_pruner.VLLM_ARCHITECTURE, slicegpt.VLLM_ARCHITECTURE}
    for target in vllm_worker.OUT_OF_TREE_MODELS.values():
        module, name = target.split(":")
        assert module == "bench.vllm_models" and f"class {name}(" in Path(environment.ROOT, "bench", "vllm_models.py").read_text()


def test_worker_path_declares_the_vllm_plugin(tmp_path):
    folder = environment.project_only_path(tmp_path)
    assert (folder / "bench" / "vllm_worker.py").is_file() and (folder / "laco" / "pruners.py").is_file()
    (dist,) = importlib.metadata.distributions(path=[str(folder)])
    assert dist.metadata["Name"] == "laco-bench-vllm-models"
    (entry,) = [e for e in dist.entry_points if e.group == "vllm.general_plugins"]
    assert entry.value == "bench.vllm_worker:register_models"
    assert entry.load() is vllm_worker.register_models  # what vLLM calls in each of its processes


def test_session_refuses_before_starting_a_worker(tmp_path):
    record = {"loadable": {"vllm": False, "reason": "layers of a kind vLLM lacks"}}
    cases = [({**SETTINGS, "python": None}, {}, "no vLLM environment"),
             ({**SETTINGS, "problem": "cannot import vllm: boom"}, {}, "cannot import vllm: boom"),
             (SETTINGS, record, "not loadable by vLLM: layers of a kind vLLM lacks"),
             (SETTINGS, {"loader": "elsewhere:load"}, "no vLLM architecture serves outputs of the loader elsewhere:load")]
    for settings, rec, reason in cases:
        session = client.VllmSession(settings, str(tmp_path), rec, WORKLOAD, tmp_path / "s.log", 5)
        with pytest.raises(client.EngineUnavailable, match=reason):
            session.start()
        assert session.pid is None
        session.close()
    assert not (tmp_path / "s.log").exists()  # no worker ever ran


@pytest.mark.parametrize("ranks, cores, expected", [
    (1, [0, 1], None),  # one rank: vLLM's own binding
    (2, [0, 1, 2, 3], "0,2|1,3"),  # dealt in turn: every core used once
    (2, [3, 1], "1|3"),  # sorted first
    (3, [0, 1], "0|1|0"),  # fewer cores than ranks: the third rank shares the first core
])
def test_tensor_parallel_ranks_on_cpu_get_the_cores_dealt_out(ranks, cores, expected):
    assert vllm_worker.cpu_thread_binding(ranks, cores) == expected


def test_a_users_cpu_binding_is_kept(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0-1|0-1")
    vllm_worker.bind_cpu_threads({"vllm": {**SETTINGS, "tensor_parallel_size": 2}, "device": "cpu"})
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0-1|0-1"


def test_cpu_tensor_parallel_without_a_binding_gets_one_per_rank(monkeypatch):
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "")  # recorded, so that the binding set below is undone
    monkeypatch.delenv("VLLM_CPU_OMP_THREADS_BIND")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    vllm_worker.bind_cpu_threads({"vllm": {**SETTINGS, "tensor_parallel_size": 2}, "device": "cpu"})
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"
