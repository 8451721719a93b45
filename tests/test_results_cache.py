"""The shared result cache (bench.results_cache): accuracy reused item by item, whole results and
parts reused across run folders with the run they came from, never across code versions unless
asked, and safe under two processes filling it at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bench.accuracy
from bench import runner
from bench.profile import parse_profile
from bench.results_cache import ResultsCache
from laco.cli import main
from run_fixtures import SMALL_SETTINGS
from test_kill_safety import laco_env, snapshot

PROFILE = """
seed = 0
measurements = {measurements}

[model]
spec = "{spec}"
""" + SMALL_SETTINGS + """
[accuracy.tasks]
piqa = {{ limit = {piqa} }}
arc_easy = {{ limit = {arc}, num_fewshot = 1 }}

[throughput]
batch_size = 1
input_len = 8
output_len = 2
"""
ORIGINAL_EVALUATE = bench.accuracy.evaluate


def profile(spec, piqa: int, arc: int, measurements=("accuracy",)):
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    text = PROFILE.format(spec=spec, piqa=piqa, arc=arc, measurements=json.dumps(list(measurements)))
    return parse_profile(tomllib.loads(text))


def asked(monkeypatch) -> list:
    """What lm-eval is asked to score, and its raw answers (lm-eval's own scores and task hashes)."""
    calls = []

    def evaluate(subject, tasks, settings, ctx):
        raw = ORIGINAL_EVALUATE(subject, tasks, settings, ctx)
        calls.append((json.loads(json.dumps(tasks)), raw))
        return raw

    monkeypatch.setattr(bench.accuracy, "evaluate", evaluate)
    return calls


def accuracy(run) -> dict:
    return json.loads((run / "results" / "dense" / "accuracy.json").read_text())["values"]


def test_a_run_scores_only_the_items_the_cache_lacks_and_equals_a_fresh_run(tiny_folder, tmp_path, data_dir,
                                                                            monkeypatch):
    calls = asked(monkeypatch)
    data = str(data_dir)
    assert runner.run_profile("first", profile(tiny_folder, 2, 2), tmp_path / "first", data_dir=data, progress=False) == []
    calls.clear()
    assert runner.run_profile("more", profile(tiny_folder, 5, 3), tmp_path / "more", data_dir=data, progress=False) == []
    # zero-shot piqa: only documents 2..4; one-shot arc_easy: every document again (its examples depend on the order)
    assert sorted((name, opts.get("docs")) for tasks, _ in calls for name, opts in tasks.items()) == [
        ("arc_easy", {"arc_easy": [0, 1, 2]}), ("piqa", {"piqa": [2, 3, 4]})]
    meta = json.loads((tmp_path / "more" / "run.json").read_text())["results_cache"]
    assert (meta["items_reused"], meta["items_scored"]) == (2, 3 + 3)
    merged = accuracy(tmp_path / "more")
    assert merged["parts"]["piqa"]["items_reused"] == 2 and merged["parts"]["piqa"]["items_scored"] == 3
    assert merged["parts"]["piqa"]["items_reused_from"] == ["first"]

    # a fresh run of the same items without the cache: item by item, and lm-eval's own scores
    cache = Path(os.environ["LACO_RESULTS_CACHE"])
    cache_files = sorted(cache.rglob("*.json"))
    calls.clear()
    fresh_run = tmp_path / "fresh"
    assert runner.run_profile("fresh", profile(tiny_folder, 5, 3), fresh_run, data_dir=data, progress=False,
                              results_cache=False) == []
    assert sorted(cache.rglob("*.json")) == cache_files, "the cache was off"
    fresh = accuracy(fresh_run)
    for task, n in (("piqa", 5), ("arc_easy", 3)):
        assert merged["items"][task] == fresh["items"][task] and len(fresh["items"][task]["doc_id"]) == n
        assert merged["tasks"][task] == fresh["tasks"][task]
        (raw,) = [raw for tasks, raw in calls if task in tasks]  # lm-eval's own figures of the fresh run
        assert fresh["tasks"][task]["acc"] == raw["results"][task]["acc,none"]
        assert fresh["tasks"][task]["acc_norm"] == raw["results"][task]["acc_norm,none"]
        assert fresh["tasks"][task]["task_hash"] == raw["task_hashes"][task]
    assert "parts" in fresh and fresh["parts"]["piqa"]["items_reused"] == 0

    # the report says which figures were reused, from which run
    assert main(["report", str(tmp_path / "more"), "--out", str(tmp_path / "reports")]) == 0
    text = (tmp_path / "reports" / "more.md").read_text()
    assert "dense piqa: 2 of 5 items from first" in text and "dense arc_easy" not in text


def test_a_run_of_fewer_windows_takes_them_from_a_cached_run_of_more(tiny_folder, tmp_path, data_dir):
    """Perplexity's windows are the text's first N: a run of 2 takes the first 2 of a cached run of 4,
    marked with that run, equal to 2 measured afresh; a run of 6 finds too few and measures all 6."""
    def run(name: str, n_windows: int, **cache) -> tuple[dict, dict]:
        p = profile(tiny_folder, 2, 2, measurements=("perplexity",))
        p.perplexity.n_windows = n_windows
        assert runner.run_profile(name, p, tmp_path / name, data_dir=str(data_dir), progress=False, **cache) == []
        doc = json.loads((tmp_path / name / "results" / "dense" / "perplexity.json").read_text())
        return doc["values"], json.loads((tmp_path / name / "run.json").read_text())["results_cache"]

    four, _ = run("four", 4)
    two, counts = run("two", 2)
    fresh, _ = run("fresh", 2, results_cache=False)
    assert (counts["hits"], counts["misses"]) == (1, 0) and two["parts"]["windows"]["reused_from"]["run_id"] == "four"
    assert two["windows"]["nll"] == four["windows"]["nll"][:2] and two["windows"]["n_windows"] == 2
    assert two["windows"]["nll"] == pytest.approx(fresh["windows"]["nll"], rel=1e-6)
    assert two["windows"]["tokens_scored"] == fresh["windows"]["tokens_scored"] == 2 * 63
    assert two["windows"]["ppl"] == pytest.approx(fresh["windows"]["ppl"], rel=1e-6)
    assert two["windows"]["ppl"] != four["windows"]["ppl"]  # recomputed over its own 2 windows
    assert two["windows"]["first_of"] == 4 and "first_of" not in fresh["windows"] and "first_of" not in four["windows"]
    assert main(["report", str(tmp_path / "two"), "--out", str(tmp_path / "reports")]) == 0
    assert "dense perplexity windows (the first 2 of 4) from four" in (tmp_path / "reports" / "two.md").read_text()
    six, counts = run("six", 6)
    assert (counts["hits"], counts["misses"]) == (0, 1) and "reused_from" not in six["parts"]["windows"]
    assert len(six["windows"]["nll"]) == 6 and six["windows"]["nll"][:4] == pytest.approx(four["windows"]["nll"], rel=1e-6)


def test_other_code_is_not_reused_unless_asked(tmp_path):
    origin = {"run_id": "r", "run_path": "/r", "measured_at": "t", "seconds": 1.0}
    ours = {"source_digest": "a", "libraries": "x"}
    ResultsCache(tmp_path, ours).put("flops", "m", "s", {"flops": 1}, origin)
    other = {"source_digest": "b", "libraries": "x"}
    assert ResultsCache(tmp_path, ours).get("flops", "m", "s") == {"values": {"flops": 1}, "origin": origin}
    assert ResultsCache(tmp_path, other).get("flops", "m", "s") is None
    assert ResultsCache(tmp_path, {**ours, "libraries": "y"}).get("flops", "m", "s") is None
    assert ResultsCache(tmp_path, other, reuse_other_code=True).get("flops", "m", "s")["values"] == {"flops": 1}


def test_two_processes_fill_the_cache_at_once_and_a_third_run_reuses_everything(tiny_folder, tmp_path, data_dir):
    path = tmp_path / "p.toml"
    path.write_text(PROFILE.format(spec=tiny_folder, piqa=3, arc=2, measurements='["perplexity", "flops", "accuracy"]'))
    bench = [sys.executable, "-m", "laco", "bench", "--profile", str(path), "--data-dir", str(data_dir), "--quiet"]
    t0 = time.monotonic()
    procs = [subprocess.Popen([*bench, "--out", str(tmp_path / run)], env=laco_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for run in ("a", "b")]
    for proc in procs:
        assert proc.wait(timeout=900) == 0, proc.stderr.read()[-3000:]
    both = time.monotonic() - t0
    cache = Path(os.environ["LACO_RESULTS_CACHE"])
    for file in cache.rglob("*"):  # every entry whole; only finished files, no temporaries
        assert not file.name.startswith("."), file
        if file.is_file():
            json.loads(file.read_text())
    t0 = time.monotonic()
    assert main(["bench", "--profile", str(path), "--out", str(tmp_path / "c"), "--data-dir", str(data_dir), "--quiet"]) == 0
    third = time.monotonic() - t0
    meta = json.loads((tmp_path / "c" / "run.json").read_text())["results_cache"]
    assert (meta["misses"], meta["items_scored"], meta["items_reused"]) == (0, 0, 5) and meta["hits"] == 2
    flops = json.loads((tmp_path / "c" / "results" / "dense" / "flops.json").read_text())
    assert flops["provenance"]["reused_from"]["run_id"] in ("a", "b")
    runs = [{k: v for k, v in snapshot(tmp_path / r).items() if k.startswith("results/")} for r in "abc"]
    values = [{k: json.loads(v)["values"] for k, v in r.items()} for r in runs]
    for v in values:  # the same figures in all three runs (where they came from aside)
        for doc in v.values():
            doc.pop("parts", None)
            doc.pop("seconds", None)
    assert values[0] == values[1] == values[2]
    print(f"two runs filling one cache at once: {both:.1f} s; a third run reusing it: {third:.1f} s, {meta}")
