"""Claims judged on synthetic runs: runs that pass, fail, and miss measurements."""

import math
import re

import pytest
from run_fixtures import good_models, write_run

from laco import LacoError
from laco.report.judge import FAIL, NOT_MEASURED, PASS, judge_run, load_claims
from laco.report.runs import load_run


@pytest.fixture(scope="module")
def claims():
    return load_claims()


def verdicts_of(tmp_path, models, **kw):
    run = load_run(write_run(tmp_path / "run", models, **kw))
    return run, {v.claim.id: v for v in judge_run(run, load_claims())}


def test_claims_file_declares_the_issues_claims(claims):
    ids = {c.id for c in claims.claims}
    assert {"laco-avg-retention", "laco-min-benchmark-retention", "laco-beats-width-baselines",
            "laco-ppl-below-baselines", "laco-memory-below-dense", "laco-memory-below-baselines",
            "laco-throughput-vs-dense", "laco-throughput-above-baselines", "laco-pruning-time-below-baselines",
            "laco-loads-in-transformers", "laco-loads-in-vllm", "merge-beats-drop", "search-beats-rule-merge"} <= ids
    for c in claims.claims:
        assert c.statement and c.source and c.paper_figure, c.id
    assert claims.get("laco-avg-retention").threshold == 0.80
    assert claims.get("laco-min-benchmark-retention").threshold == 0.30
    assert claims.roles["width"] == ("llm-pruner", "slicegpt")


def test_a_good_run_passes_every_claim(tmp_path):
    _, verdicts = verdicts_of(tmp_path, good_models())
    assert {k: v.status for k, v in verdicts.items()} == {k: PASS for k in verdicts}
    retention = verdicts["laco-avg-retention"]
    dense, laco = good_models()["dense"]["accuracy"], good_models()["laco"]["accuracy"]
    expected = sum(laco.values()) / sum(dense.values())
    assert retention.rows[0].value == pytest.approx(expected)
    assert retention.ours == f"{expected:.1%}"
    # throughput is compared on vLLM where both models loaded in it, on HF otherwise
    assert "vllm" in verdicts["laco-throughput-vs-dense"].ours
    assert verdicts["laco-throughput-above-baselines"].ours.count(", hf)") == 2


def test_a_bad_laco_fails_the_claims_it_breaks(tmp_path):
    models = good_models()
    models["laco"]["accuracy"] = {"hellaswag": 0.25, "piqa": 0.50, "arc_easy": 0.15, "winogrande": 0.50,
                                  "boolq": 0.38}
    models["laco"]["ppl"] = 80.0
    models["laco"]["hf"], models["laco"]["vllm"] = 30.0, 150.0
    _, verdicts = verdicts_of(tmp_path, models)
    assert verdicts["laco-avg-retention"].status == FAIL  # 1.78 / 2.82 = 63%
    each = verdicts["laco-min-benchmark-retention"]
    assert each.status == FAIL
    assert [r.other for r in each.rows if r.status == FAIL] == ["arc_easy"]  # 0.15 / 0.58 = 25.9% < 30%
    assert each.ours.startswith("lowest 25.9% (arc_easy)")
    assert verdicts["laco-ppl-below-baselines"].status == FAIL
    assert verdicts["laco-throughput-vs-dense"].status == FAIL
    assert verdicts["laco-memory-below-dense"].status == PASS  # untouched claims still pass


def test_missing_measurements_are_never_passed(tmp_path):
    models = good_models()
    models["laco"]["omit"] = ["accuracy", "throughput_hf", "pruning_time"]
    models["laco"]["vllm"] = "vllm not installed in this environment"
    del models["drop"]
    _, verdicts = verdicts_of(tmp_path, models)
    for claim in ("laco-avg-retention", "laco-min-benchmark-retention", "laco-beats-width-baselines",
                  "laco-throughput-vs-dense", "laco-throughput-above-baselines",
                  "laco-pruning-time-below-baselines", "laco-loads-in-vllm", "merge-beats-drop"):
        assert verdicts[claim].status == NOT_MEASURED, claim
    assert "laco: no accuracy result" in verdicts["laco-avg-retention"].rows[0].note
    assert "vllm not installed" in verdicts["laco-loads-in-vllm"].rows[0].note
    assert "run has no drop model" in verdicts["merge-beats-drop"].rows[0].note
    assert verdicts["laco-memory-below-dense"].status == PASS


def test_a_run_without_laco_reports_every_laco_claim_not_measured(tmp_path):
    models = good_models()
    del models["laco"]
    _, verdicts = verdicts_of(tmp_path, models)
    assert {v.status for v in verdicts.values()} == {NOT_MEASURED}
    assert verdicts["laco-avg-retention"].rows[0].note == "run has no laco model"


def test_a_failed_row_outweighs_a_missing_one(tmp_path):
    models = good_models()
    models["llm-pruner"]["prune_s"] = 1.0  # faster than LaCo's 4.1 s: a failure
    del models["slicegpt"]["prune_s"]  # and a missing value
    _, verdicts = verdicts_of(tmp_path, models)
    v = verdicts["laco-pruning-time-below-baselines"]
    assert [r.status for r in v.rows] == [FAIL, NOT_MEASURED]
    assert v.status == FAIL


def test_results_of_an_older_model_are_stale_not_reused(tmp_path):
    models = good_models()
    models["laco"]["stale"] = ["perplexity"]
    run, verdicts = verdicts_of(tmp_path, models)
    assert run.stale == ["laco/perplexity"]
    assert run.ok("laco", "perplexity") is None
    assert verdicts["laco-ppl-below-baselines"].status == NOT_MEASURED
    assert "stale" in verdicts["laco-ppl-below-baselines"].rows[0].note


def test_a_baseline_pruned_harder_than_laco_is_not_a_matched_comparison(tmp_path):
    models = good_models()
    models["slicegpt"]["record"]["parameters"]["pruning_ratio"] = 0.35
    models["drop"]["record"]["parameters"]["pruning_ratio"] = 0.20
    _, verdicts = verdicts_of(tmp_path, models)
    rows = {r.other: r for r in verdicts["laco-beats-width-baselines"].rows}
    assert rows["llm-pruner"].status == PASS
    assert rows["slicegpt"].status == NOT_MEASURED and "35.0% > laco 27.0%" in rows["slicegpt"].note
    assert verdicts["merge-beats-drop"].status == NOT_MEASURED  # 20% vs 27%: not the same ratio


def test_accuracy_differences_within_two_stderr_are_marked_noise(tmp_path):
    models = good_models()
    # one point above each baseline task by task: far inside 2 * sqrt(se^2 + se^2) of n=200 items
    models["laco"]["accuracy"] = {t: s + 0.01 for t, s in models["llm-pruner"]["accuracy"].items()}
    models["slicegpt"]["accuracy"] = {t: s - 0.05 for t, s in models["llm-pruner"]["accuracy"].items()}
    _, verdicts = verdicts_of(tmp_path, models)
    rows = {r.other: r for r in verdicts["laco-beats-width-baselines"].rows}
    assert rows["llm-pruner"].status == PASS and rows["llm-pruner"].within_noise is True
    assert rows["slicegpt"].within_noise is False  # 6 points: beyond 2 * 2.2 points (se of a 5-task mean)
    assert verdicts["laco-beats-width-baselines"].noise == "within noise: llm-pruner"


def test_noise_threshold_is_exactly_k_combined_stderr(tmp_path):
    from run_fixtures import stderr

    from laco.report.judge import _accuracy_noise

    se = stderr(0.5)
    bound = 2 * math.sqrt(2) * se
    assert _accuracy_noise(bound * 0.99, se, se, 1.0, 2.0) is True
    assert _accuracy_noise(bound * 1.01, se, se, 1.0, 2.0) is False
    assert _accuracy_noise(0.0, None, se, 1.0, 2.0) is None  # no stderr, no claim about noise


@pytest.mark.parametrize("profile, noise, gated", [("smollm2-135m", True, False), ("llama2-7b", False, True)])
def test_throughput_drift_floor_is_per_profile(tmp_path, claims, profile, noise, gated):
    """x0.71 with spreads of +-5% that do not overlap: within the CPU profile's declared drift
    (0.34), beyond any on a GPU profile. The verdict follows the point estimate either way."""
    assert claims.throughput_floor("smollm2-135m") == 0.34 and claims.throughput_floor("llama2-7b") == 0.0
    models = good_models()
    models["laco"]["vllm"] = 150.0  # dense: 210
    _, verdicts = verdicts_of(tmp_path, models, profile=profile)
    verdict = verdicts["laco-throughput-vs-dense"]
    assert verdict.status == FAIL and verdict.rows[0].within_noise is noise and verdict.gated is gated


def test_a_group_without_lm_eval_stderr_gets_the_binomial_one(tmp_path):
    """MMLU at one item per subject: lm-eval has no per-subject stderr to pool and writes none."""
    from laco.report.judge import binomial_stderr, task_scores

    run = load_run(write_run(tmp_path / "run", good_models()))
    doc = run.ok("laco", "accuracy").values["tasks"]["boolq"]
    doc.update({"acc": 0.25, "acc_stderr": None, "n": 57})
    assert task_scores(run, "laco")["boolq"] == (0.25, pytest.approx(math.sqrt(0.25 * 0.75 / 56)))
    assert binomial_stderr(0.5, 1) is None and binomial_stderr(0.5, None) is None
    from laco.report.render import accuracy_section

    text, _ = accuracy_section(run, load_claims())
    assert "25.0 ±5.8*" in text and "shown is the binomial" in text

def test_vllm_loadability_fails_when_the_pruner_declares_it_unloadable(tmp_path):
    models = good_models()
    models["laco"]["record"]["loadable"]["vllm"] = False
    models["laco"]["vllm"] = None
    models["laco"]["record"]["loader"] = "somewhere:custom_loader"
    _, verdicts = verdicts_of(tmp_path, models)
    assert verdicts["laco-loads-in-vllm"].status == FAIL
    assert verdicts["laco-loads-in-transformers"].status == FAIL


def test_gating_follows_the_profile(tmp_path, claims):
    assert claims.get("laco-avg-retention").gated_for("llama2-7b")
    assert not claims.get("laco-avg-retention").gated_for("smollm2-135m")
    assert claims.get("laco-memory-below-dense").gated_for("smollm2-135m")
    _, verdicts = verdicts_of(tmp_path, good_models(), profile="llama2-7b")
    assert verdicts["laco-avg-retention"].gated and verdicts["laco-loads-in-vllm"].gated


def test_a_bad_claims_file_is_a_clear_error(tmp_path):
    path = tmp_path / "claims.toml"
    path.write_text('[roles]\nlaco = ["laco"]\n[[claim]]\nid = "x"\nkind = "retention"\nthreshhold = 0.8\n')
    with pytest.raises(LacoError, match="unknown fields"):
        load_claims(path)
    path.write_text('[[claim]]\nid = "x"\nkind = "versus"\nagainst = "nobody"\nstatement="s"\nsource="s"\n'
                    'paper_figure="p"\n')
    with pytest.raises(LacoError, match="unknown role 'laco'|unknown role 'nobody'"):
        load_claims(path)
    with pytest.raises(LacoError, match="not a run directory"):
        load_run(tmp_path)


def test_a_saved_config_that_forgot_the_deleted_layers_fails_the_loading_claim(tmp_path):
    import json

    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 30}))
    models = good_models()
    models["laco"]["saved"] = str(folder)  # the record says 21 layers after pruning
    _, verdicts = verdicts_of(tmp_path, models)
    v = verdicts["laco-loads-in-transformers"]
    assert v.status == FAIL and "num_hidden_layers=30 but the model has 21 layers" in v.rows[0].note
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 21}))
    _, verdicts = verdicts_of(tmp_path, models)
    assert verdicts["laco-loads-in-transformers"].status == PASS
    assert "num_hidden_layers=21" in verdicts["laco-loads-in-transformers"].rows[0].note


def test_loadability_without_a_declaration_or_saved_config_is_not_measured(tmp_path):
    models = good_models()
    del models["laco"]["record"]["loadable"]  # e.g. a record written by `laco prune`, not by the pruner registry
    _, verdicts = verdicts_of(tmp_path, models)
    assert verdicts["laco-loads-in-transformers"].status == NOT_MEASURED


def test_entered_paper_figures_appear_beside_ours(tmp_path):
    """With a (synthetic, test-only) figures file, the paper's number shows in the verdict and report."""
    import shutil

    from laco.report.render import render

    shutil.copy(load_claims().path, tmp_path / "claims.toml")
    (tmp_path / "paper_figures.toml").write_text(
        '[models.llama2-7b]\npaper_model = "Llama2-7B"\n'
        '[models.llama2-7b.laco]\nratio = 0.5\npercent_of_dense = 12.5\naverage = 10.0\nscores = {piqa = 11.0}\n'
        'source = "Table X (test data)"\n')
    claims = load_claims(tmp_path / "claims.toml")
    run = load_run(write_run(tmp_path / "run", good_models(), profile="llama2-7b"))
    verdicts = {v.claim.id: v for v in judge_run(run, claims)}
    assert verdicts["laco-avg-retention"].paper == ">= 80% of dense; paper: 12.5"
    assert verdicts["laco-beats-width-baselines"].paper == "LaCo avg > baseline avg"  # nothing entered for it
    text, _ = render(run, claims)
    assert "Paper figures for Llama2-7B (in %):" in text
    assert re.search(r"\| laco +\| 50.0% +\| 11.0 +\| 10.0 +\| 12.5% +\| Table X \(test data\) +\|", text)
