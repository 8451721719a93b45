"""The vLLM engine on SmolLM2, in the vLLM environment (`tox -e vllm`, or LACO_VLLM_PYTHON set):
one-shot throughput, a persistent session, lm-eval's vllm backend.

Skipped where no such environment exists: the main environment never has vllm."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import accuracy
from bench.context import RunContext
from bench.profile import TaskOptions, load_profile
from bench.rounds import measure_phase
from bench.store import RunStore
from bench.subject import Subject, dense_folder
from bench.vllm import client
from bench.vllm import measure as vllm_measure
from bench.vllm.environment import PYTHON_ENV

DATA_DIR = os.environ.get("LACO_DATA_DIR") or str(Path(__file__).resolve().parents[2] / "shared" / "data")
PYTHON = os.environ.get(PYTHON_ENV) or (sys.executable if importlib.util.find_spec("vllm") else None)

pytestmark = [
    pytest.mark.smollm2,
    pytest.mark.skipif(PYTHON is None, reason="no vLLM environment (run `tox -e vllm` or set LACO_VLLM_PYTHON)"),
]


@pytest.fixture
def ctx(tmp_path, monkeypatch):
    monkeypatch.setenv(PYTHON_ENV, PYTHON)
    profile = load_profile("smoke")[1]
    return RunContext(profile, RunStore(tmp_path), DATA_DIR if Path(DATA_DIR).is_dir() else None, progress=False)


def dense(ctx) -> Subject:
    from laco.loading import resolve

    return Subject("dense", "dense", "fp-dense", {}, ctx.dense_load_args(),
                   folder=dense_folder(resolve(ctx.profile.model.spec)))


def test_vllm_throughput_on_the_dense_model(ctx):
    settings = vllm_measure.settings(ctx)
    assert settings["vllm"]["version"], settings["vllm"]["problem"]
    outcome = vllm_measure.measure(dense(ctx), settings, ctx)
    assert outcome.status == "ok", outcome.reason
    values = outcome.values
    assert values["engine"] == "vllm" and len(values["per_round"]["decode_tokens_per_s"]) == settings["rounds"]
    assert values["decode_tokens_per_s"]["median"] > 0 and values["prefill_tokens_per_s"]["median"] > 0
    assert values["load_seconds"] > 0
    assert values["dtype"] == settings["vllm"]["dtype"] == ctx.profile.model.dtype  # the engine runs the HF dtype


def test_vllm_phase_alternates_the_models_of_a_run(ctx):
    """Two engines alive at once, their timed batches alternating round by round."""
    settings = {**vllm_measure.settings(ctx), "rounds": 2, "warmup": 0}
    a, b = dense(ctx), dense(ctx)
    b.key = "again"
    outcomes = measure_phase(vllm_measure.timing(settings, ctx), [a, b])
    assert {k: o.status for k, o in outcomes.items()} == {"dense": "ok", "again": "ok"}
    order = [(c["round"], c["label"]) for c in outcomes["dense"].values["order"] if c["phase"] == "timed"]
    assert order == [(0, "dense"), (0, "again"), (1, "dense"), (1, "again")]


def process_group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


WORKLOAD = {"batch_size": 2, "input_len": 16, "output_len": 4, "seed": 0, "device": "cpu"}


def test_vllm_session_times_batches_until_closed(ctx, tmp_path):
    session = client.VllmSession(ctx.vllm_settings(), dense(ctx).folder, {}, WORKLOAD, tmp_path / "session.log", 600)
    assert session.pid is None and "vllm" in session.label
    session.start()
    pgid = session.pid
    try:
        batches = [session.time_batch() for _ in range(2)]  # the engine stays up between requests
    finally:
        session.close()
    for batch in batches:
        assert batch["input_tokens"] == 2 * 16 and batch["output_tokens"] == 2 * 4
        assert batch["prefill_s"] > 0 and batch["total_s"] > 0
    assert session.load_seconds > 0 and "LACO_VLLM " in (tmp_path / "session.log").read_text()
    assert session.pid is None and process_group_gone(pgid)
    session.close()  # again: safe
    with pytest.raises(client.EngineUnavailable, match="not started"):
        session.time_batch()


def test_vllm_session_start_times_out_and_stops_the_engine(ctx, tmp_path, monkeypatch):
    started = []
    start_worker = client.start_worker
    monkeypatch.setattr(client, "start_worker", lambda *a, **k: started.append(start_worker(*a, **k)) or started[-1])
    session = client.VllmSession(ctx.vllm_settings(), dense(ctx).folder, {}, WORKLOAD, tmp_path / "session.log", 3)
    with pytest.raises(client.EngineUnavailable, match="start timed out after 3 s"):
        session.start()  # an engine takes far longer than 3 s to load
    assert session.pid is None and len(started) == 1
    assert started[0].returncode is not None and process_group_gone(started[0].pid)


def lm_eval_in(python: str) -> bool:
    return subprocess.run([python, "-c", "import lm_eval"], capture_output=True).returncode == 0


@pytest.mark.skipif(not Path(DATA_DIR, "MANIFEST.md").is_file(), reason=f"offline eval data not found at {DATA_DIR}")
def test_lm_eval_vllm_backend_scores_as_hflm(ctx):
    if not lm_eval_in(PYTHON):
        pytest.skip(f"lm-eval is not installed in the vLLM environment {PYTHON}")
    ctx.profile.accuracy.tasks = {"piqa": TaskOptions(limit=8)}
    subject = dense(ctx)
    by_backend = {}
    for backend in ("hf", "vllm"):
        ctx.profile.accuracy.backend = backend
        outcome = accuracy.measure(subject, accuracy.settings(ctx), ctx)
        assert outcome.status == "ok", outcome.reason
        by_backend[backend] = outcome.values["tasks"]["piqa"]
    hf, vllm = by_backend["hf"], by_backend["vllm"]
    assert hf["task_hash"] == vllm["task_hash"] and hf["n"] == vllm["n"] == 8  # the same prompts
    assert vllm["acc"] == pytest.approx(hf["acc"], abs=1 / 8)  # one dtype on both: at most one item apart
