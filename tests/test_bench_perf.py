"""Speed measurement pieces without timing anything: the interleaving of rounds (fake timers),
the FLOPs of a tiny Llama against hand arithmetic, the ideal speed-up of a depth-pruned model,
the HF timer's token counts, and a memory worker that crashes or hangs (not measured)."""

from __future__ import annotations

import json
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from bench import flops, memory, rounds, throughput
from bench.subject import Outcome, Subject
from laco.surgery import delete_layers
from conftest import byte_tokenizer, tiny_config, tiny_model


# -- interleaved rounds ----------------------------------------------------------------------------
class FakeTimer:
    """Logs every call in a shared list; its k-th call takes (k + 1) * `unit` seconds in all."""

    def __init__(self, label: str, log: list, unit: float, batch_size: int = 2):
        self.label, self.log, self.unit, self.batch_size, self.calls = label, log, unit, batch_size, 0

    def time_batch(self) -> dict:
        self.log.append(self.label)
        self.calls += 1
        total = self.calls * self.unit
        return {"prefill_s": total / 4, "total_s": total, "input_tokens": 20, "output_tokens": 10}


def test_rounds_interleave_every_model_in_the_same_order_warmup_first():
    log: list[str] = []
    timers = [FakeTimer("dense", log, 1.0), FakeTimer("m1", log, 2.0), FakeTimer("m2", log, 4.0)]
    ticks = iter(range(100))
    result = rounds.interleave(timers, rounds=3, warmup=2, clock=lambda: next(ticks))

    assert log == ["dense", "m1", "m2"] * 5  # 2 warm-up rounds, then 3 timed ones, round-robin
    assert result["labels"] == ["dense", "m1", "m2"]
    order = result["order"]
    assert [(o["phase"], o["round"], o["position"], o["label"]) for o in order] == [
        (phase, r, p, label) for phase, n in (("warmup", 2), ("timed", 3)) for r in range(n)
        for p, label in enumerate(["dense", "m1", "m2"])]
    assert [o["started"] for o in order] == list(range(15))  # one clock reading per call, in call order
    # warm-up calls are not in the results: dense's timed calls are its 3rd..5th (3, 4, 5 s)
    dense = rounds.throughput_of(timers[0], result)
    assert [r["total_s"] for r in dense["per_round"]["results"]] == [3.0, 4.0, 5.0]
    assert {r["batch_size"] for r in dense["per_round"]["results"]} == {2}  # the timer's own batch size
    assert dense["per_round"]["output_tokens_per_s"] == pytest.approx([10 / 3, 10 / 4, 10 / 5])
    assert dense["output_tokens_per_s"] == pytest.approx({"median": 2.5, "min": 2.0, "max": 10 / 3})
    m2 = rounds.throughput_of(timers[2], result)
    assert m2["per_round"]["total_tokens_per_s"] == pytest.approx([30 / 12, 30 / 16, 30 / 20])


def test_rates_follow_vllms_convention():
    one = {"prefill_s": 0.5, "total_s": 2.5, "input_tokens": 4 * 100, "output_tokens": 4 * 16, "batch_size": 4}
    assert rounds.rates(one) == pytest.approx({
        "prefill_tokens_per_s": 400 / 0.5,
        "decode_tokens_per_s": (64 - 4) / 2.0,  # the 15 tokens after the first of each of 4 sequences
        "total_tokens_per_s": 464 / 2.5,
        "output_tokens_per_s": 64 / 2.5,
    })
    # one new token per sequence: nothing is decoded after the prefill
    assert rounds.rates({**one, "output_tokens": 4})["decode_tokens_per_s"] is None


def test_rounds_refuse_two_timers_of_one_label():
    with pytest.raises(ValueError, match="labels"):
        rounds.interleave([FakeTimer("a", [], 1), FakeTimer("a", [], 1)], rounds=1, warmup=0)


class FakeTiming:
    """A phase's timing (bench.rounds.measure_phase): a timer per subject but "skip", which takes no part."""

    rounds, warmup = 2, 1

    def __init__(self, log: list, broken: bool = False):
        self.log, self.broken, self.closed = log, broken, False

    @contextmanager
    def timers(self, subjects):
        try:
            timers = [FakeTimer(s, self.log, 1.0) for s in subjects if s != "skip"]
            if self.broken:
                timers[-1].time_batch = lambda: 1 / 0
            yield timers, {"skip": Outcome.not_available("left out")}
        finally:
            self.closed = True

    def values(self, timer, done: dict) -> dict:
        return {"totals": [r["total_s"] for r in done["results"][timer.label]], "with": done["labels"]}


def test_one_phase_driver_times_what_its_timing_gives_and_always_closes_it():
    log: list[str] = []
    timing = FakeTiming(log)
    outcomes = rounds.measure_phase(timing, ["a", "skip", "b"])
    assert log == ["a", "b"] * 3 and timing.closed  # one warm-up round, two timed ones
    assert {k: o.status for k, o in outcomes.items()} == {"a": "ok", "b": "ok", "skip": "n/a"}
    assert outcomes["a"].values == {"totals": [2.0, 3.0], "with": ["a", "b"]} and outcomes["skip"].reason == "left out"
    broken = FakeTiming([], broken=True)
    with pytest.raises(ZeroDivisionError):
        rounds.measure_phase(broken, ["a", "b"])
    assert broken.closed


# -- FLOPs: torch's counter against hand arithmetic ------------------------------------------------
H, FF, HEADS, KV_HEADS, VOCAB = 64, 128, 4, 2, 260  # tests/conftest.py tiny_config
D = H // HEADS


def hand_layer_linear_per_token() -> int:
    """2 * in * out for every projection of one Llama layer, per token."""
    kv = KV_HEADS * D
    attention = 2 * (H * H + H * kv + H * kv + H * H)  # q, k, v, o
    mlp = 2 * 3 * H * FF  # gate, up, down
    return attention + mlp


def hand_attention(batch: int, queries: int, keys: int) -> int:
    """Scores (q k^T) and values (p v): 2 * queries * keys * head_dim each, for every query head."""
    return 2 * 2 * batch * HEADS * queries * keys * D


def hand_lm_head(positions: int) -> int:
    return 2 * H * VOCAB * positions


def test_tiny_llama_flops_match_hand_arithmetic():
    layers, batch, prompt, new = 8, 2, 12, 5
    assert tiny_config("llama").hidden_size == H and tiny_config("llama").vocab_size == VOCAB
    counted = flops.count_flops(tiny_model("llama", layers), batch, prompt, new)

    prefill_layers = layers * (batch * prompt * hand_layer_linear_per_token() + hand_attention(batch, prompt, prompt))
    prefill_head = hand_lm_head(batch)  # logits of the last position only
    by_module = counted["prefill"]["by_module"]
    assert by_module["decoder_layers"]["total"] == prefill_layers
    assert by_module["decoder_layers"]["attention"] == layers * hand_attention(batch, prompt, prompt)
    assert by_module["lm_head"] == prefill_head
    assert counted["prefill"]["flops"] == prefill_layers + prefill_head
    assert counted["prefill"]["flops_per_token"] == (prefill_layers + prefill_head) / (batch * prompt)

    def step(keys: int) -> float:  # one new token per sequence over `keys` keys, per token
        return (layers * (batch * hand_layer_linear_per_token() + hand_attention(batch, 1, keys)) + hand_lm_head(batch)) / batch

    decode = counted["decode"]
    assert decode["steps"] == new - 1
    assert (decode["first"]["key_length"], decode["last"]["key_length"]) == (prompt + 1, prompt + new - 1)
    assert decode["first"]["flops_per_token"] == step(prompt + 1)
    assert decode["last"]["flops_per_token"] == step(prompt + new - 1)
    mean_over_steps = sum(step(prompt + i) for i in range(1, new)) / (new - 1)
    assert decode["flops_per_token_mean"] == pytest.approx(mean_over_steps, rel=1e-12)
    assert counted["workload_flops"] == pytest.approx(prefill_layers + prefill_head + batch * (new - 1) * mean_over_steps)

    per_layer = 2 * H * H + 2 * H * KV_HEADS * D + 3 * H * FF + 2 * H  # projections + two norms
    params = counted["parameters"]
    assert params == {"total": 2 * VOCAB * H + layers * per_layer + H, "embedding": VOCAB * H, "lm_head": VOCAB * H,
                      "lm_head_tied": False, "non_embedding": layers * per_layer + H,
                      "decoder_layers": layers * per_layer, "layers": layers}


def test_ideal_speedup_of_a_depth_pruned_model_is_the_hand_ratio():
    batch, prompt, new = 2, 12, 5
    dense = tiny_model("llama", 8)
    pruned = tiny_model("llama", 8)
    delete_layers(pruned, [5, 6])
    ideal = flops.ideal_speedup(flops.count_flops(dense, batch, prompt, new), flops.count_flops(pruned, batch, prompt, new))

    def prefill(layers: int) -> int:
        layer = batch * prompt * hand_layer_linear_per_token() + hand_attention(batch, prompt, prompt)
        return layers * layer + hand_lm_head(batch)

    def decode_mean(layers: int) -> float:
        keys = range(prompt + 1, prompt + new)
        return sum(layers * (batch * hand_layer_linear_per_token() + hand_attention(batch, 1, k)) + hand_lm_head(batch)
                   for k in keys) / len(keys)

    assert ideal["prefill"] == pytest.approx(prefill(8) / prefill(6), rel=1e-12)
    assert ideal["decode"] == pytest.approx(decode_mean(8) / decode_mean(6), rel=1e-12)
    whole = lambda n: prefill(n) + (new - 1) * decode_mean(n)  # noqa: E731
    assert ideal["workload"] == pytest.approx(whole(8) / whole(6), rel=1e-12)
    assert 1 < ideal["decode"] < 8 / 6  # lm_head does not shrink


def test_ideal_speedup_refuses_different_workloads():
    model = tiny_model("llama", 2)
    with pytest.raises(ValueError, match="different workloads"):
        flops.ideal_speedup(flops.count_flops(model, 1, 4, 2), flops.count_flops(model, 1, 8, 2))


def test_flops_count_leaves_the_model_untouched():
    model = tiny_model("llama", 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flops.count_flops(model, 1, 4, 3)
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# -- the HF timer ----------------------------------------------------------------------------------
class CountingSubject(Subject):
    """A subject whose model is a tiny Llama, built anew at every load (counted)."""

    loads = 0

    def model_and_tokenizer(self):
        if self._loaded is None:
            self.loads += 1
            self._loaded = (tiny_model("llama", 2), byte_tokenizer())
        return self._loaded


@pytest.mark.parametrize("resident", [True, False])
def test_hf_timer_times_one_batch_and_keeps_or_releases_its_model(resident):
    subject = CountingSubject("m", "x", "fp", {}, {})
    s = {"batch_size": 3, "input_len": 6, "output_len": 4, "seed": 0}
    timer = throughput.HfTimer(subject, s, resident=resident)
    results = [timer.time_batch() for _ in range(2)]
    for r in results:
        assert (r["input_tokens"], r["output_tokens"], r["batch_size"]) == (18, 12, 3)
        assert 0 < r["prefill_s"] < r["total_s"]
    assert subject.loads == (1 if resident else 2)
    assert (subject._loaded is not None) == resident


def test_resident_policy_keeps_models_that_fit_half_the_free_memory():
    assert throughput.resident_policy([300, 200], free_mb=1000)["resident"] is True
    policy = throughput.resident_policy([300, 201], free_mb=1000)
    assert policy["resident"] is False and "reloaded" in policy["reason"]
    assert throughput.resident_policy([1], free_mb=None)["resident"] is False


# -- memory: a failed worker is not measured --------------------------------------------------------
def saved_tiny(folder: Path) -> Path:
    tiny_model("llama", 2).save_pretrained(folder)
    byte_tokenizer().save_pretrained(folder)
    (folder / "laco.json").write_text(json.dumps({"loader": "transformers"}))
    return folder


SETTINGS = {"prompt_len": 8, "new_tokens": 4, "batch_size": 1, "seed": 0}


def test_memory_worker_on_corrupt_weights_is_not_measured(tmp_path):
    folder = saved_tiny(tmp_path / "m")
    (folder / "model.safetensors").write_bytes(b"not a safetensors file")
    subject = Subject("m", "x", "fp", {}, {"kind": "pruned", "folder": str(folder), "dtype": "float32", "device": "cpu"})
    outcome = memory.measure(subject, {**SETTINGS, "timeout_s": 120}, None)
    assert outcome.status == "n/a" and outcome.values == {}
    assert "worker failed (exit 1)" in outcome.reason and "Error" in outcome.reason


def test_memory_worker_that_hangs_is_stopped_with_its_children(tmp_path, monkeypatch):
    pid_file = tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); "
              f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    monkeypatch.setattr(memory, "worker_command", lambda job: [sys.executable, "-c", script])
    start = time.monotonic()
    outcome = memory.measure(Subject("m", "x", "fp", {}, {}), {**SETTINGS, "timeout_s": 3}, None)
    assert time.monotonic() - start < 30
    assert outcome.status == "n/a" and "timed out after 3 s" in outcome.reason
    child = int(pid_file.read_text())
    assert grandchild_ends_within(child, seconds=10)  # it went with the group


def grandchild_ends_within(pid, seconds):
    """SIGKILL to a group is delivered when each member is next scheduled: on a loaded machine a
    killed grandchild can still read 'running' for a moment (CI saw it once), so poll."""
    status = Path(f"/proc/{pid}/status")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if "zombie" in status.read_text():
                return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def test_memory_worker_killed_by_a_signal_is_not_measured(monkeypatch):
    monkeypatch.setattr(memory, "worker_command",
                        lambda job: [sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"])
    outcome = memory.measure(Subject("m", "x", "fp", {}, {}), SETTINGS, None)
    assert outcome.status == "n/a" and "killed by SIGKILL" in outcome.reason


def test_memory_worker_without_a_result_line_is_not_measured(monkeypatch):
    monkeypatch.setattr(memory, "worker_command", lambda job: [sys.executable, "-c", "print('hello')"])
    outcome = memory.measure(Subject("m", "x", "fp", {}, {}), SETTINGS, None)
    assert outcome.status == "n/a" and "no result" in outcome.reason and "hello" in outcome.reason


def test_memory_without_a_process_peak_is_not_measured(monkeypatch):
    line = memory.RESULT_PREFIX + json.dumps({"param_mb": 1.0, "peak_mb": None, "peak_missing": "no VmHWM"})
    monkeypatch.setattr(memory, "worker_command", lambda job: [sys.executable, "-c", f"print({line!r})"])
    outcome = memory.measure(Subject("m", "x", "fp", {}, {}), SETTINGS, None)
    assert outcome.status == "n/a" and "no VmHWM" in outcome.reason


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux /proc")
def test_peak_rss_is_this_process_high_water_mark():
    block = b"\x01" * (100 * 2**20)  # 100 MB written, so resident
    assert memory.peak_rss_mb() >= memory.rss_now_mb() >= 100
    del block
