"""The vLLM engine on SmolLM2, in the vLLM environment (`tox -e vllm`, or LACO_VLLM_PYTHON set).

Skipped where no such environment exists: the main environment never has vllm."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import accuracy, vllm_engine
from bench.profile import load_profile
from bench.runner import RunContext
from bench.store import RunStore
from bench.subject import Subject, dense_folder

DATA_DIR = os.environ.get("LACO_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
PYTHON = os.environ.get(vllm_engine.PYTHON_ENV) or (sys.executable if importlib.util.find_spec("vllm") else None)

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(PYTHON is None, reason="no vLLM environment (run `tox -e vllm` or set LACO_VLLM_PYTHON)"),
]


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv(vllm_engine.PYTHON_ENV, PYTHON)
    profile = load_profile("smoke")[1]
    return RunContext(profile, RunStore(tmp_path), DATA_DIR if Path(DATA_DIR).is_dir() else None, progress=False)


def dense(ctx) -> Subject:
    from laco.loading import resolve

    return Subject("dense", "dense", "fp-dense", {}, ctx.dense_load_args(),
                   folder=dense_folder(resolve(ctx.profile["model"]["spec"])))


def test_vllm_throughput_on_the_dense_model(ctx):
    settings = vllm_engine.settings(ctx)
    assert settings["vllm"]["version"], settings["vllm"]["problem"]
    outcome = vllm_engine.measure(dense(ctx), settings, ctx)
    assert outcome.status == "ok", outcome.reason
    values = outcome.values
    assert values["engine"] == "vllm" and len(values["seconds"]) == settings["repeats"]
    assert values["output_tokens_per_s"]["median"] > 0 and values["load_seconds"] > 0


def lm_eval_in(python: str) -> bool:
    return subprocess.run([python, "-c", "import lm_eval"], capture_output=True).returncode == 0


@pytest.mark.skipif(not Path(DATA_DIR, "MANIFEST.md").is_file(), reason=f"offline eval data not found at {DATA_DIR}")
def test_lm_eval_vllm_backend_scores_as_hflm(ctx):
    if not lm_eval_in(PYTHON):
        pytest.skip(f"lm-eval is not installed in the vLLM environment {PYTHON}")
    ctx.profile["accuracy"]["tasks"] = {"piqa": {"limit": 8}}
    subject = dense(ctx)
    by_backend = {}
    for backend in ("hf", "vllm"):
        ctx.profile["accuracy"]["backend"] = backend
        outcome = accuracy.measure(subject, accuracy.settings(ctx), ctx)
        assert outcome.status == "ok", outcome.reason
        by_backend[backend] = outcome.values["tasks"]["piqa"]
    hf, vllm = by_backend["hf"], by_backend["vllm"]
    assert hf["task_hash"] == vllm["task_hash"] and hf["n"] == vllm["n"] == 8  # the same prompts
    assert vllm["acc"] == pytest.approx(hf["acc"], abs=1 / 8)  # float32 on both: at most one item apart
