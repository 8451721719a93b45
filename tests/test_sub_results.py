"""A measurement made of parts keeps every part that succeeded (bench.parts): a perplexity whose
lm-eval part fails keeps its windows and is judged from them; an accuracy with a failed task keeps
the others; the resume measures only the failed parts."""

from __future__ import annotations

import json
from collections import Counter

import pytest

import bench.accuracy
import bench.perplexity
from bench import runner
from bench.profile import parse_profile
from laco.config import read_toml
from suites import evidence as ev
from suites.claims import load_claims
from suites.figures import Figures
from suites.outcomes import PASS
from suites.verdicts import Judge

PROFILE = """
seed = 0
measurements = ["perplexity", "accuracy"]

[model]
spec = "{spec}"

[[methods]]
name = "laco"
params = {{ merge = "paper", C = 3, T = 0.3 }}

[perplexity]
window = 64
n_windows = 3
batch_size = 3
lm_eval_wikitext = true
lm_eval_limit = 1

[accuracy]
batch_size = 2

[accuracy.tasks]
piqa = {{ limit = 3 }}
arc_easy = {{ limit = 2 }}

[[acceptance]]
id = "ppl-kept"
statement = "The pruned model's perplexity stays within 10x the dense model's."
subject = "laco"
metric = "perplexity.ppl"
comparison = "<"
threshold = 10.0
"""
FORCED = "RuntimeError: forced failure"
ORIGINAL = (bench.perplexity.window_perplexity, bench.perplexity.lm_eval_wikitext, bench.accuracy.evaluate)


def counted(monkeypatch, fail: bool) -> Counter:
    """Count the windows, lm-eval word perplexities and accuracy tasks measured; with `fail`, lm-eval's
    word perplexity and the task arc_easy fail."""
    calls: Counter = Counter()
    windows, wikitext, evaluate = ORIGINAL

    def count_windows(*args, **kwargs):
        calls["windows"] += 1
        return windows(*args, **kwargs)

    def count_wikitext(*args, **kwargs):
        calls["lm_eval_wikitext"] += 1
        if fail:
            raise RuntimeError("forced failure")
        return wikitext(*args, **kwargs)

    def count_tasks(subject, tasks, settings, ctx):
        for name in tasks:
            calls[name] += 1
        if fail and "arc_easy" in tasks:
            raise RuntimeError("forced failure")
        return evaluate(subject, tasks, settings, ctx)

    monkeypatch.setattr(bench.perplexity, "window_perplexity", count_windows)
    monkeypatch.setattr(bench.perplexity, "lm_eval_wikitext", count_wikitext)
    monkeypatch.setattr(bench.accuracy, "evaluate", count_tasks)
    return calls


def results(run) -> dict:
    return {f"{p.parent.name}/{p.stem}": json.loads(p.read_text()) for p in sorted(run.glob("results/*/*.json"))}


def test_failed_parts_are_recorded_the_others_kept_judged_and_only_the_failed_ones_measured_again(
        tiny_folder, tmp_path, data_dir, monkeypatch):
    (tmp_path / "p.toml").write_text(PROFILE.format(spec=tiny_folder))
    profile = parse_profile(read_toml(tmp_path / "p.toml", "profile"))
    run = tmp_path / "run"
    calls = counted(monkeypatch, fail=True)
    failures = runner.run_profile("parts", profile, run, data_dir=str(data_dir), progress=False)
    assert sorted(failures) == sorted(f"{k}/{m}/{p}: {FORCED}" for k in ("dense", "laco")
                                      for m, p in (("perplexity", "lm_eval_wikitext"), ("accuracy", "arc_easy")))
    assert calls == Counter(windows=2, lm_eval_wikitext=2, piqa=2, arc_easy=2)
    first = results(run)
    for key in ("dense", "laco"):
        ppl, acc = first[f"{key}/perplexity"], first[f"{key}/accuracy"]
        assert ppl["status"] == "ok" and ppl["reason"] == f"lm_eval_wikitext failed: {FORCED}"
        assert len(ppl["values"]["windows"]["nll"]) == 3 and ppl["values"]["lm_eval_wikitext"] is None
        assert ppl["values"]["parts"]["windows"]["status"] == "ok"
        assert ppl["values"]["parts"]["lm_eval_wikitext"] == {"status": "failed", "reason": FORCED,
                                                              "settings_hash": ppl["values"]["parts"]["lm_eval_wikitext"]
                                                              ["settings_hash"]}
        assert acc["status"] == "ok" and acc["reason"] == f"arc_easy failed: {FORCED}"
        assert list(acc["values"]["tasks"]) == ["piqa"] and len(acc["values"]["items"]["piqa"]["doc_id"]) == 3
    assert json.loads((run / "run.json").read_text())["finished"] is None

    # the kept parts are judged; what needs a failed part is not measured, with its reason
    loaded = ev.load_run(run)
    figures = Figures(loaded)
    verdicts = [v for v in Judge(loaded, load_claims(), figures).all() if v.claim.id == "profile:ppl-kept"]
    assert [row.status for v in verdicts for row in v.rows] == [PASS]
    assert figures.task_retention("laco", "piqa").estimate > 0
    with pytest.raises(ev.NotMeasured, match=f"laco: accuracy of arc_easy failed \\({FORCED}\\)"):
        figures.retention("laco")

    # the resume measures the failed parts alone; the kept ones stay as they were
    calls = counted(monkeypatch, fail=False)
    assert runner.run_profile("parts", profile, run, data_dir=str(data_dir), progress=False) == []
    assert calls == Counter(lm_eval_wikitext=2, wikitext=2, arc_easy=2)  # lm-eval runs the task "wikitext"
    second = results(run)
    for key in ("dense", "laco"):
        ppl, acc = second[f"{key}/perplexity"]["values"], second[f"{key}/accuracy"]["values"]
        assert ppl["windows"] == first[f"{key}/perplexity"]["values"]["windows"]
        assert ppl["lm_eval_wikitext"]["word_perplexity"] > 1 and second[f"{key}/perplexity"]["reason"] is None
        assert acc["items"]["piqa"] == first[f"{key}/accuracy"]["values"]["items"]["piqa"]
        assert list(acc["tasks"]) == ["piqa", "arc_easy"] and len(acc["items"]["arc_easy"]["doc_id"]) == 2
        assert {p["status"] for p in acc["parts"].values()} == {"ok"}
    assert json.loads((run / "run.json").read_text())["finished"] is not None
    # both tasks are there to judge (the tiny random model's Per. itself is left out: dense is at chance)
    resumed = Figures(ev.load_run(run))
    assert all(resumed.task_retention("laco", task).estimate >= 0 for task in ("piqa", "arc_easy"))
