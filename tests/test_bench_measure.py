"""Measurements and the run store on tiny random models (seconds each)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch

from bench import memory, runner
from bench.context import RunContext
from bench.lm_eval_run import request_cache_name
from bench.perplexity import window_perplexity
from bench.profile import parse_profile
from bench.pruned import pruned_subject
from bench.store import RunStore
from bench.subject import Subject
from bench.vllm import client as vllm_client
from bench.vllm import environment as vllm_environment
from bench.vllm import measure as vllm_measure
from laco.loading import LoadedModel
from laco.pruners import PRUNERS, PruneOutcome

DATA_DIR = os.environ.get("LACO_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
VOCAB = 99


def char_tokenizer():
    """A character-level tokenizer (ids 4..98 for printable ASCII), built offline."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, **{chr(c): c - 28 for c in range(32, 127)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), "isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>")


def tiny_llama(seed: int = 0, layers: int = 4):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=layers, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=2048, pad_token_id=0,
                         bos_token_id=1, eos_token_id=2)
    return LlamaForCausalLM(config).eval()


def save_folder(path: Path, seed: int = 0) -> Path:
    tiny_llama(seed).save_pretrained(path)
    char_tokenizer().save_pretrained(path)
    return path


# -- the store -----------------------------------------------------------------------------------
def test_store_is_fresh_only_for_ok_results_of_the_same_model_settings_and_code(tmp_path, monkeypatch):
    from bench import store as store_module

    store = RunStore(tmp_path)
    doc = {"model": "m", "model_fingerprint": "f1", "measurement": "memory", "status": "ok", "settings_hash": "s1"}
    store.write_result(dict(doc))
    assert store.is_fresh("m", "memory", "f1", "s1")
    assert not store.is_fresh("m", "memory", "f2", "s1") and not store.is_fresh("m", "memory", "f1", "s2")
    other = {**store_module.code_key(), "source_digest": "edited"}  # one line of the measuring code changed
    monkeypatch.setattr(store_module, "code_key", lambda: other)
    assert not store.is_fresh("m", "memory", "f1", "s1")
    assert RunStore(tmp_path, reuse_other_code=True).is_fresh("m", "memory", "f1", "s1")
    store.write_result({**doc, "status": "failed", "reason": "worker crashed"})  # replaces the old number
    assert not store.is_fresh("m", "memory", "f1", "s1")
    with pytest.raises(ValueError):
        store.write_result({**doc, "status": "maybe"})


def test_store_write_is_atomic(tmp_path, monkeypatch):
    store = RunStore(tmp_path)
    doc = {"model": "m", "model_fingerprint": "f", "measurement": "memory", "status": "ok", "settings_hash": "s"}
    path = store.write_result(doc)

    def crash(*args):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError):
        store.write_result({**doc, "settings_hash": "new"})
    assert json.loads(path.read_text())["settings_hash"] == "s"  # the old result is intact
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # and no temp file is left


def test_run_json_keeps_the_first_start_on_resume(tmp_path):
    store = RunStore(tmp_path)
    first = store.start("p", {"a": 1}, data_dir=None, seed=0, device="cpu")
    store.finish()
    again = store.start("p", {"a": 1}, data_dir=None, seed=0, device="cpu")
    assert again["started"] == first["started"] and again["finished"] is None and len(again["resumed"]) == 1


def test_run_json_records_the_machine_probe_of_the_run(tmp_path):
    """compare and history normalise absolute rates by it (suites.compare.machine_ratio)."""
    RunStore(tmp_path).start("p", {"a": 1}, data_dir=None, seed=0, device="cpu")
    probe = json.loads((tmp_path / "run.json").read_text())["probe"]
    assert "error" not in probe and probe["device"] == "cpu"
    assert probe["fp32_gflops"] > 0 and probe["bf16_gflops"] > 0 and probe["memory_gbps"] > 0


def test_a_resumed_run_keeps_its_first_probe_and_lists_every_segments(tmp_path, monkeypatch):
    """Results measured before a resume were measured at the first segment's speed: a resume adds its probe
    to `probes` and leaves `probe` (what compare and history normalise by) as it was."""
    from bench import store as store_module
    rates = iter([10.0, 30.0])
    monkeypatch.setattr(store_module, "machine_probe", lambda device: {"fp32_gflops": next(rates), "device": device})
    store = RunStore(tmp_path)
    store.start("p", {"a": 1}, data_dir=None, seed=0, device="cpu")
    again = store.start("p", {"a": 1}, data_dir=None, seed=0, device="cpu")
    assert again["probe"] == {"fp32_gflops": 10.0, "device": "cpu"}
    assert [p["fp32_gflops"] for p in again["probes"]] == [10.0, 30.0]


# -- the measurements ----------------------------------------------------------------------------
def test_window_perplexity_of_a_uniform_model_is_the_vocabulary_size():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, input_ids):
            return type("Out", (), {"logits": torch.zeros(*input_ids.shape, VOCAB)})

    result = window_perplexity(Uniform(), char_tokenizer(), "abcdefghij" * 50, window=64, n_windows=5, batch_size=2)
    assert result["ppl"] == pytest.approx(VOCAB, rel=1e-5)
    assert result["n_windows"] == 5 and result["available_windows"] == 500 // 64
    assert result["tokens_scored"] == 5 * 63


def test_memory_worker_counts_the_weights_exactly(tmp_path):
    folder = save_folder(tmp_path / "m")
    (folder / "laco.json").write_text(json.dumps({"loader": "transformers"}))
    args = {"kind": "pruned", "folder": str(folder), "dtype": "float32", "device": "cpu"}
    subject = Subject("m", "x", "fp", {}, args)
    outcome = memory.measure(subject, {"prompt_len": 8, "new_tokens": 4, "batch_size": 1, "seed": 0}, None)
    expected = sum(p.numel() for p in tiny_llama().parameters()) * 4 / 2**20
    assert outcome.values["param_mb"] == pytest.approx(expected)
    assert outcome.values["peak_kind"] == "subprocess_peak_rss"
    assert outcome.values["process_peak_rss_mb"] == outcome.values["peak_mb"]
    assert "cuda_max_memory_allocated_mb" not in outcome.values
    # the worker's own peak: far below a parent process that holds more than it
    assert outcome.values["rss_after_load_mb"] <= outcome.values["peak_mb"] < 2000



def test_memory_worker_resolves_a_relative_folder_from_the_callers_folder(tmp_path, monkeypatch):
    """`laco bench --out runs/x` gives relative weight folders; the worker must find them."""
    folder = save_folder(tmp_path / "runs" / "m")
    (folder / "laco.json").write_text(json.dumps({"loader": "transformers"}))
    monkeypatch.chdir(tmp_path)
    subject = Subject("m", "x", "fp", {}, {"kind": "pruned", "folder": "runs/m", "dtype": "float32", "device": "cpu"})
    outcome = memory.measure(subject, {"prompt_len": 8, "new_tokens": 4, "batch_size": 1, "seed": 0}, None)
    assert outcome.values["param_mb"] == pytest.approx(sum(p.numel() for p in tiny_llama().parameters()) * 4 / 2**20)

@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_memory_on_gpu_is_cuda_max_memory_allocated(tmp_path):
    folder = save_folder(tmp_path / "m")
    (folder / "laco.json").write_text(json.dumps({"loader": "transformers"}))
    subject = Subject("m", "x", "fp", {}, {"kind": "pruned", "folder": str(folder), "dtype": "float32", "device": "cuda"})
    values = memory.measure(subject, {"prompt_len": 8, "new_tokens": 4, "batch_size": 1, "seed": 0}, None).values
    assert values["peak_kind"] == "cuda_max_memory_allocated" and values["peak_mb"] >= values["param_mb"]
    assert values["cuda_max_memory_allocated_mb"] == values["peak_mb"] and values["process_peak_rss_mb"] > 0


# -- vLLM: n/a with the reason, never silently skipped ---------------------------------------------
def vllm_settings(**v) -> dict:
    return {"batch_size": 1, "input_len": 4, "output_len": 2, "warmup": 0, "repeats": 1, "seed": 0, "device": "cpu",
            "vllm": {"python": None, "problem": None, "version": None, **v}}


def test_vllm_without_environment_is_not_available():
    outcome = vllm_measure.measure(Subject("d", "dense", "f", {}, {}, folder="x"), vllm_settings(), None)
    assert outcome.status == "n/a" and "LACO_VLLM_PYTHON" in outcome.reason


def test_vllm_is_not_in_the_main_environment():
    version, problem = vllm_environment.probe(sys.executable)
    assert version is None and "cannot import vllm" in problem


def test_vllm_respects_a_pruner_that_says_its_model_cannot_load():
    record = {"loadable": {"transformers": False, "vllm": False, "reason": "per-layer widths differ"}}
    subject = Subject("slicegpt", "slicegpt", "f", record, {}, folder="x")
    outcome = vllm_measure.measure(subject, vllm_settings(python=sys.executable, version="0"), None)
    assert outcome.status == "n/a" and "per-layer widths differ" in outcome.reason


def test_vllm_failure_gives_the_error_line(tmp_path):
    reason = vllm_client.run_worker({"python": sys.executable}, {"task": "throughput", "model": "nowhere",
                                                                 "device": "gpu"}, tmp_path / "w.log", 120)
    assert "ModuleNotFoundError" in reason and "vllm" in reason and (tmp_path / "w.log").is_file()


def test_vllm_worker_path_holds_this_project_alone(tmp_path):
    """The main environment's site-packages (torch, transformers) must not reach the vLLM one; beside
    the project's packages only the metadata of its vLLM plugin (tests/test_bench_vllm_engine.py)."""
    path = vllm_environment.project_only_path(tmp_path)
    assert sorted(p.name for p in path.iterdir()) == ["bench", "laco", "laco_bench_vllm_models-0.dist-info"]
    assert (path / "bench" / "vllm_worker.py").is_file() and (path / "laco" / "surgery.py").is_file()


def test_vllm_environment_found_in_the_project_tox_folder(tmp_path, monkeypatch):
    python = tmp_path / ".tox" / "vllm" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(vllm_environment.PYTHON_ENV, raising=False)
    assert vllm_environment.vllm_python(None) == str(python)
    assert vllm_environment.vllm_python("/opt/vllm/bin/python") == "/opt/vllm/bin/python"  # the profile's wins

# -- lm-eval request caches are per model ----------------------------------------------------------
class Ctx:
    def __init__(self, root: Path, data_dir: str):
        from bench.tasks import prepare_tasks

        self.store = RunStore(root)
        self._tasks = prepare_tasks(["wikitext"], data_dir, root / "tasks")

    def tasks(self):
        return self._tasks


@pytest.mark.skipif(not Path(DATA_DIR, "MANIFEST.md").is_file(), reason=f"offline eval data not found at {DATA_DIR}")
def test_lm_eval_request_cache_is_never_shared_between_models(tmp_path):
    from bench.accuracy import evaluate

    ctx = Ctx(tmp_path, DATA_DIR)
    settings = {"backend": "hf", "device": "cpu", "dtype": "float32", "max_length": 256, "batch_size": 4,
                "seed": 0, "bootstrap_iters": 0}
    task = {"wikitext": {"limit": 1, "num_fewshot": 0}}

    def word_ppl(fingerprint: str, seed: int) -> float:
        subject = Subject("m", "x", fingerprint, {}, {})
        subject.adopt(tiny_llama(seed), char_tokenizer())
        return evaluate(subject, task, settings, ctx)["results"]["wikitext"]["word_perplexity,none"]

    a, b = word_ppl("fingerprint-a", 0), word_ppl("fingerprint-b", 1)
    assert a != b  # two models, two answers
    caches = sorted(p.name for p in (tmp_path / "cache" / "lm_eval").iterdir())
    assert len(caches) == 2 and any("fingerprint-a" in c for c in caches) and any("fingerprint-b" in c for c in caches)
    # what a cache keyed without the model would do: model b, filed under a's fingerprint,
    # is answered from a's cache
    assert word_ppl("fingerprint-a", 1) == a
    assert request_cache_name("f1", "x") != request_cache_name("f2", "x")


# -- methods: matched ratio, reuse of saved weights, re-pruning on a changed setting ---------------
def test_matched_target_and_pruned_model_reuse(tmp_path, monkeypatch):
    folder = save_folder(tmp_path / "dense")
    calls = []

    def fake_pruner(loaded: LoadedModel, sentences, *, target_ratio=None, keep=3, seed=0):
        """Deletes layers down to `keep`; records the ratio it was asked for."""
        from laco.surgery import delete_layers, parameter_count

        calls.append({"target_ratio": target_ratio, "keep": keep})
        before = parameter_count(loaded.model)
        delete_layers(loaded.model, list(range(keep, loaded.model.config.num_hidden_layers)))
        after = parameter_count(loaded.model)
        record = {"method": "fake", "fingerprint": f"fake-{keep}-{target_ratio}", "prune_seconds": 0.5,
                  "loader": "transformers", "parameters": {"before": before, "after": after,
                                                         "kept_ratio": after / before, "pruning_ratio": 1 - after / before}}
        return PruneOutcome(loaded.model, record)

    monkeypatch.setitem(PRUNERS, "fake", f"{__name__}:_fake")
    monkeypatch.setattr(sys.modules[__name__], "_fake", fake_pruner, raising=False)
    methods = [{"name": "fake", "label": "first", "params": {"keep": 2}},
               {"name": "fake", "label": "second", "target": "match:first"}]
    profile = parse_profile({"model": {"spec": str(folder)}, "methods": methods})
    ctx = RunContext(profile, RunStore(tmp_path / "run"), None, progress=False)

    first = pruned_subject(profile.methods[0], ctx, "dense-fp")
    second = pruned_subject(profile.methods[1], ctx, "dense-fp")
    ratio = first.record["parameters"]["pruning_ratio"]
    assert calls == [{"target_ratio": None, "keep": 2}, {"target_ratio": ratio, "keep": 3}]
    assert second.folder == str(tmp_path / "run" / "weights" / "second")

    again = pruned_subject(profile.methods[0], ctx, "dense-fp")
    assert len(calls) == 2 and again.fingerprint == first.fingerprint  # reloaded, not pruned again
    model, _ = again.model_and_tokenizer()
    assert model.config.num_hidden_layers == 2

    from bench import store as store_module

    code = store_module.code_key()
    monkeypatch.setattr(store_module, "code_key", lambda: {**code, "source_digest": "a-fix-in-the-pruner"})
    pruned_subject(profile.methods[0], ctx, "dense-fp")
    assert len(calls) == 3  # other code: pruned again, not reused

    profile.methods[0].params["keep"] = 1  # a changed parameter prunes again
    pruned_subject(profile.methods[0], ctx, "dense-fp")
    assert calls[-1] == {"target_ratio": None, "keep": 1}


def test_a_failed_reprune_leaves_no_record_for_later_steps(tmp_path, monkeypatch):
    """A method pruned once, then pruned again by a broken pruner: its old record, weights and results
    are gone, and a method matching its ratio fails instead of reading the old record."""
    folder = save_folder(tmp_path / "dense")
    state = {"broken": False}

    def pruner(loaded: LoadedModel, sentences, *, target_ratio=None, keep=2, seed=0):
        from laco.surgery import delete_layers, parameter_count

        if state["broken"]:
            raise RuntimeError("pruner bug")
        before = parameter_count(loaded.model)
        delete_layers(loaded.model, list(range(keep, loaded.model.config.num_hidden_layers)))
        after = parameter_count(loaded.model)
        return PruneOutcome(loaded.model, {"method": "fake", "fingerprint": f"f-{keep}", "prune_seconds": 0.1,
                                           "loader": "transformers", "parameters": {
                                               "before": before, "after": after, "pruning_ratio": 1 - after / before}})

    monkeypatch.setitem(PRUNERS, "fake", f"{__name__}:_fake2")
    monkeypatch.setattr(sys.modules[__name__], "_fake2", pruner, raising=False)
    methods = [{"name": "fake", "label": "first"}, {"name": "fake", "label": "second", "target": "match:first"}]
    profile = parse_profile({"model": {"spec": str(folder)}, "methods": methods, "measurements": ["memory"]})
    store = RunStore(tmp_path / "run")
    ctx = RunContext(profile, store, None, progress=False)
    pruned_subject(profile.methods[0], ctx, "dense-fp")
    (store.root / "results" / "first").mkdir(parents=True)
    (store.root / "results" / "first" / "memory.json").write_text("{}")
    assert store.read_model("first") is not None
    state["broken"] = True
    profile.methods[0].params["keep"] = 1  # a new setting, and the pruner now fails
    with pytest.raises(RuntimeError, match="pruner bug"):
        pruned_subject(profile.methods[0], ctx, "dense-fp")
    assert store.read_model("first") is None and not store.weights_dir("first").exists()
    assert not (store.root / "results" / "first").exists()
    with pytest.raises(RuntimeError, match="matches 'first', which has no pruned model"):
        pruned_subject(profile.methods[1], ctx, "dense-fp")


def test_a_broken_pruner_fails_alone(tmp_path, monkeypatch):
    folder = save_folder(tmp_path / "dense")

    def broken(loaded, sentences, **params):
        raise RuntimeError("singular matrix")

    monkeypatch.setitem(PRUNERS, "broken", f"{__name__}:_broken")
    monkeypatch.setattr(sys.modules[__name__], "_broken", broken, raising=False)
    methods = [{"name": "broken"}, {"name": "laco", "params": {"merge": "drop", "C": 2, "T": 0.01}}]
    profile = parse_profile({"model": {"spec": str(folder)}, "methods": methods, "measurements": ["pruning_time"]})
    failures = runner.run_profile("p", profile, tmp_path / "run", progress=False)
    assert failures == ["broken/pruning: RuntimeError: singular matrix"]
    done = json.loads((tmp_path / "run" / "results" / "laco" / "pruning_time.json").read_text())
    assert done["status"] == "ok" and done["values"]["seconds"] > 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["finished"] is None  # not a finished run
