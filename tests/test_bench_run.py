"""The smoke profile end to end on SmolLM2 with the offline data: an interrupted run, its resume,
a rerun that measures nothing, and a changed setting that re-measures only what it affects.

One run directory goes through all four phases (the smoke profile takes minutes on 2 cores, so
it runs once here, plus the few seconds before the interruption)."""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from pathlib import Path

import pytest

from bench import runner
from bench.profile import load_profile

DATA_DIR = os.environ.get("LACO_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
RESULT_KEYS = {"model", "model_fingerprint", "measurement", "status", "reason", "settings", "settings_hash",
               "provenance", "values"}

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(not Path(DATA_DIR, "MANIFEST.md").is_file(),
                       reason=f"offline eval data not found at {DATA_DIR} (set LACO_DATA_DIR)"),
]


class Interrupt(Exception):
    pass


def count_measurements(monkeypatch) -> Counter:
    """Count calls of every measurement's `measure`, keyed by (model, measurement)."""
    import importlib

    calls: Counter = Counter()
    timed_phase = runner.time_phase

    def counted_phase(name, subjects, settings, ctx):  # the phases: every model of one at once
        for subject in subjects:
            calls[(subject.key, name)] += 1
        return timed_phase(name, subjects, settings, ctx)

    monkeypatch.setattr(runner, "time_phase", counted_phase)
    for name, module_name in runner.MODULES.items():
        if name in runner.PHASED:
            continue
        module = importlib.import_module(module_name)
        original = module.measure

        def counted(subject, settings, ctx, _original=original, _name=name):
            calls[(subject.key, _name)] += 1
            return _original(subject, settings, ctx)

        monkeypatch.setattr(module, "measure", counted)
    return calls


def results(run: Path) -> dict[tuple[str, str], dict]:
    return {(p.parent.name, p.stem): json.loads(p.read_text()) for p in sorted(run.glob("results/*/*.json"))}


def mtimes(run: Path) -> dict[tuple[str, str], int]:
    return {(p.parent.name, p.stem): p.stat().st_mtime_ns for p in run.glob("results/*/*.json")}


def test_smoke_profile_interrupt_resume_and_invalidation(tmp_path, monkeypatch):
    monkeypatch.delenv("LACO_VLLM_PYTHON", raising=False)  # the vLLM path has its own tests
    monkeypatch.setattr("bench.vllm.environment.vllm_python", lambda configured: None)
    name, profile = load_profile("smoke")
    run = tmp_path / "run"

    # 1. interrupted right after the first result is written
    def stop(doc):
        raise Interrupt(doc["measurement"])

    with pytest.raises(Interrupt):
        runner.run_profile(name, copy.deepcopy(profile), run, data_dir=DATA_DIR, progress=False, on_result=stop)
    first = results(run)
    assert len(first) == 1, "exactly the measurement that finished was written"
    (first_key,) = first
    first_mtime = mtimes(run)[first_key]
    assert json.loads((run / "run.json").read_text())["finished"] is None

    # 2. resumed: the finished result is not measured again, everything else is
    calls = count_measurements(monkeypatch)
    failures = runner.run_profile(name, copy.deepcopy(profile), run, data_dir=DATA_DIR, progress=False)
    assert failures == []
    assert calls[first_key] == 0 and mtimes(run)[first_key] == first_mtime
    done = results(run)
    expected = {(m, k) for m in ("dense", "laco") for k in profile.measurements} - {("dense", "pruning_time")}
    assert set(done) == expected
    check_schema(run, done, profile)

    # 3. rerun: nothing "ok" is measured again (n/a results are retried, and stay n/a here)
    calls.clear()
    before = mtimes(run)
    runner.run_profile(name, copy.deepcopy(profile), run, data_dir=DATA_DIR, progress=False)
    assert {k for k, n in calls.items() if n} == {k for k, doc in done.items() if doc["status"] == "n/a"}
    assert all(mtimes(run)[k] == before[k] for k, doc in done.items() if doc["status"] == "ok")

    # 4. a changed throughput setting re-measures throughput only, for both models
    calls.clear()
    changed = copy.deepcopy(profile)
    changed.throughput.warmup += 1
    runner.run_profile(name, changed, run, data_dir=DATA_DIR, progress=False)
    measured = {k for k, n in calls.items() if n}
    assert measured == {(m, t) for m in ("dense", "laco") for t in ("throughput_hf", "throughput_vllm")}
    after = results(run)
    assert after[("laco", "throughput_hf")]["values"]["warmup"] == profile.throughput.warmup + 1
    assert all(mtimes(run)[k] == before[k] for k in done if k[1] not in ("throughput_hf", "throughput_vllm"))


def check_schema(run: Path, done: dict, profile) -> None:
    """The run directory as suites/ reads it (helper-context: run directory schema)."""
    meta = json.loads((run / "run.json").read_text())
    assert {"profile", "profile_name", "started", "finished", "git_commit", "libraries", "device", "seed",
            "data_dir"} <= set(meta)
    assert meta["finished"] and meta["profile_name"] == "smoke"
    # the profile as run: the smoke profile's bfloat16, or float32 with the note saying why where bf16 is not
    # fast on this CPU (bench.dtype: AMX, or AVX512-BF16 measured faster)
    ran, asked = copy.deepcopy(meta["profile"]), profile.model_dump()
    asked_dtype, ran_dtype, note = asked["model"].pop("dtype"), ran["model"].pop("dtype"), ran["model"].pop("dtype_note")
    assert asked_dtype == "bfloat16" and ran_dtype in ("bfloat16", "float32")
    if ran_dtype == "bfloat16":
        assert note is None
    else:
        assert note.startswith("float32 instead of bfloat16: this CPU has no AMX") and "than float32" in note, note
    asked["model"].pop("dtype_note")
    assert ran == asked
    dense = json.loads((run / "models" / "dense.json").read_text())
    laco = json.loads((run / "models" / "laco.json").read_text())
    assert dense["method"] == "dense" and dense["record"] == {} and dense["saved"] is None
    assert laco["method"] == "laco" and Path(laco["saved"], "laco.json").is_file()
    assert laco["fingerprint"] != dense["fingerprint"] and laco["weights_sha256"] and dense["weights_sha256"]
    assert meta["code"]["source_digest"] and meta["code_history"][-1]["source_digest"] == meta["code"]["source_digest"]
    assert laco["record"]["parameters"]["after"] < laco["record"]["parameters"]["before"]

    for (model, measurement), doc in done.items():
        assert set(doc) >= RESULT_KEYS and doc["model"] == model and doc["measurement"] == measurement
        assert doc["model_fingerprint"] == (dense if model == "dense" else laco)["fingerprint"]
        assert {"libraries", "device", "seed", "git_commit", "started", "seconds"} <= set(doc["provenance"])
        if measurement == "throughput_vllm":  # no vLLM environment in this test: n/a, with the reason
            assert doc["status"] == "n/a" and "LACO_VLLM_PYTHON" in doc["reason"]
        else:
            assert doc["status"] == "ok" and doc["reason"] is None

    acc = done[("laco", "accuracy")]["values"]
    assert set(acc["tasks"]) == set(profile.accuracy.tasks)
    for task, scores in acc["tasks"].items():
        limit = profile.accuracy.tasks[task].limit
        assert scores["n"] == (limit * 57 if task == "mmlu" else limit)
        assert 0 <= scores[scores["metric"]] <= 1 and scores["task_hash"]
    assert acc["tasks"]["piqa"]["metric"] == "acc_norm" and acc["tasks"]["mmlu"]["metric"] == "acc"
    assert {"CMNLI", "CHID", "C3", "XSum"} <= set(acc["not_available"])
    assert acc["not_in_profile"]["HellaSwag"] == "hellaswag"

    for model in ("dense", "laco"):
        ppl = done[(model, "perplexity")]["values"]
        assert ppl["windows"]["window"] == 512 and ppl["windows"]["n_windows"] == profile.perplexity.n_windows
        assert ppl["windows"]["ppl"] > 1 and ppl["lm_eval_wikitext"]["word_perplexity"] > 1
        mem = done[(model, "memory")]["values"]
        assert mem["peak_kind"] == "subprocess_peak_rss" and mem["peak_mb"] > mem["param_mb"] > 0
        tput = done[(model, "throughput_hf")]["values"]
        assert tput["batch_size"] == profile.throughput.batch_size and tput["rounds"] >= 5
        assert tput["dtype"] == done[(model, "memory")]["settings"]["dtype"]
        for key in ("prefill_tokens_per_s", "decode_tokens_per_s", "output_tokens_per_s", "total_tokens_per_s"):
            assert len(tput["per_round"][key]) == tput["rounds"]
            assert tput[key]["min"] <= tput[key]["median"] <= tput[key]["max"]
    # fewer parameters after pruning, by the record's own count (4 bytes each in float32, 2 in bfloat16)
    removed = laco["record"]["parameters"]["before"] - laco["record"]["parameters"]["after"]
    mem = {m: done[(m, "memory")]["values"]["param_mb"] for m in ("dense", "laco")}
    dtype = done[("dense", "memory")]["settings"]["dtype"]  # the profile's, or float32 where bf16 is not fast
    assert laco["record"]["dtype"] == "float32"  # the smoke profile prunes in float32 ([model] prune_dtype)
    assert laco["dtypes"] == {"pruned": "float32", "measured": dtype}
    assert mem["dense"] - mem["laco"] == pytest.approx(removed * {"float32": 4, "bfloat16": 2}[dtype] / 2**20)
    prune = done[("laco", "pruning_time")]["values"]
    assert prune["first"] == laco["record"]["prune_seconds"] > 0
    assert len(prune["repeats"]) == profile.pruning_time.repeats and all(t > 0 for t in prune["repeats"])
    for model in ("dense", "laco"):
        flops = done[(model, "flops")]["values"]
        assert flops["decode"]["flops_per_token_mean"] > 0 and flops["parameters"]["layers"] > 0
    assert (done[("dense", "flops")]["values"]["decode"]["flops_per_token_mean"]
            > done[("laco", "flops")]["values"]["decode"]["flops_per_token_mean"])
    for model in ("dense", "laco"):  # per-item evidence and per-window NLL for the suites to pair
        items = done[(model, "accuracy")]["values"]["items"]
        assert len(items["piqa"]["doc_id"]) == profile.accuracy.tasks["piqa"].limit
        assert len(items["mmlu"]["doc_id"]) == 57 and items["mmlu"]["n_choices"][0] == 4
        assert len(done[(model, "perplexity")]["values"]["windows"]["nll"]) == profile.perplexity.n_windows
