"""Claims judged on synthetic runs: verdicts by interval, conditions, chance, bounds and the paper beside us."""

import json

import numpy as np
import pytest
from run_fixtures import DENSE_SCORES, good_models, write_run

from laco import LacoError
from suites import statistics as st
from suites.claims import load_claims
from suites.evidence import load_run
from suites.verdicts import FAIL, INCONCLUSIVE, NOT_AT_CONDITIONS, NOT_MEASURED, PASS, decide, judge_run


@pytest.fixture(scope="module")
def claims():
    return load_claims()


def verdicts_of(tmp_path, models, **kw):
    run = load_run(write_run(tmp_path / "run", models, **kw))
    return run, {(v.claim.id, v.subject): v for v in judge_run(run, load_claims())}


def by_claim(verdicts, subject="laco"):
    return {c: v for (c, s), v in verdicts.items() if s == subject}


@pytest.mark.parametrize("comparison, low, high, expected", [
    (">", 0.1, 0.3, PASS), (">", -0.1, 0.3, INCONCLUSIVE), (">", -0.3, -0.1, FAIL), (">", 0.0, 0.0, FAIL),
    (">=", 0.8, 0.9, PASS), (">=", 0.8, 0.8, PASS), (">=", 0.7, 0.9, INCONCLUSIVE), (">=", 0.6, 0.79, FAIL),
    ("<", 0.5, 0.9, PASS), ("<", 0.9, 1.1, INCONCLUSIVE), ("<", 1.0, 1.2, FAIL),
    ("<=", 2.0, 3.0, PASS), ("<=", 2.5, 3.5, INCONCLUSIVE), ("<=", 3.01, 4.0, FAIL),
])
def test_a_verdict_is_where_the_whole_interval_lies(comparison, low, high, expected):
    threshold = {">": 0.0, ">=": 0.8, "<": 1.0, "<=": 3.0}[comparison]
    assert decide(st.Interval((low + high) / 2, low, high), comparison, threshold) == expected


def test_claims_file_carries_conditions_and_paper_tables(claims):
    retention = claims.get("laco-avg-retention")
    assert retention.conditions.ratio == [0.25, 0.30] and retention.threshold == 0.80
    assert retention.paper.table == 2 and retention.paper.columns == ["Per."]
    assert claims.get("laco-beats-width-baselines").conditions.match == "equal-or-slightly-smaller"
    assert claims.get("laco-memory-below-dense").conditions.ratio is None  # memory holds at any ratio
    assert claims.roles["width"] == ("llm-pruner", "slicegpt")
    for c in claims.claims:
        assert c.statement and c.source and c.paper_figure, c.id
        if c.paper:
            table = claims.paper.table(c.paper.table)
            assert table is not None and set(c.paper.columns) <= set(table.columns), c.id


def test_a_good_run_passes_every_claim(tmp_path):
    _, verdicts = verdicts_of(tmp_path, good_models())
    assert {c: v.status for c, v in by_claim(verdicts).items()} == {c: PASS for c in by_claim(verdicts)}
    retention = by_claim(verdicts)["laco-avg-retention"]
    laco = good_models()["laco"]["accuracy"]
    expected = np.mean([laco[t] / DENSE_SCORES[t] for t in DENSE_SCORES])  # the paper's Per.: mean of ratios
    assert retention.rows[0].interval.estimate == pytest.approx(expected)
    assert retention.rows[0].interval.low > 0.80


def test_identical_answers_are_a_difference_of_exactly_zero_and_fail_a_beats_claim(tmp_path):
    """rule-merge holds LaCo's weights: the paired difference is 0 with a zero-width interval, so
    "search beats rule" is decided FAIL (no item favours the search), not "within noise"."""
    models = good_models()
    models["rule-merge"].update(same_as="laco", accuracy=models["laco"]["accuracy"], weights="w-laco")
    _, verdicts = verdicts_of(tmp_path, models)
    row = by_claim(verdicts)["search-beats-rule-merge"].rows[0]
    assert (row.interval.estimate, row.interval.low, row.interval.high) == (0.0, 0.0, 0.0)
    assert row.status == FAIL and "+0.0 [+0.0, +0.0] pt" in row.ours


def test_a_model_at_chance_fails_the_chance_aware_claims_but_keeps_the_papers_30_percent(tmp_path):
    models = good_models()
    chance = {"hellaswag": 0.25, "piqa": 0.50, "arc_easy": 0.25, "winogrande": 0.50, "boolq": 0.50}
    models["laco"]["accuracy"] = chance
    _, verdicts = verdicts_of(tmp_path, models)
    v = by_claim(verdicts)
    assert v["laco-min-benchmark-retention"].status == PASS  # 25/43 .. 50/68: every ratio above 0.30
    assert v["laco-avg-retention-above-chance"].status == FAIL
    above = v["laco-every-benchmark-above-chance"]  # exactly at chance: every interval holds 0, none passes
    assert above.status == INCONCLUSIVE and all(r.interval.contains(0.0) and r.status == INCONCLUSIVE for r in above.rows)
    assert any(f.startswith("at chance") for f in v["laco-avg-retention"].notes)


def test_a_model_pruned_by_7_9_percent_is_not_at_the_retention_claims_conditions(tmp_path):
    models = good_models()
    models["laco"]["record"]["parameters"]["pruning_ratio"] = 0.079
    _, verdicts = verdicts_of(tmp_path, models)
    v = by_claim(verdicts)["laco-avg-retention"]
    assert v.status == NOT_AT_CONDITIONS and v.status != PASS
    assert "removed 7.9%" in v.rows[0].note and "25%–30%" in v.rows[0].note
    assert by_claim(verdicts)["laco-memory-below-dense"].status == PASS  # memory states no ratio band


def test_the_papers_own_ratio_counts_as_its_conditions_on_its_own_model(tmp_path):
    """Baichuan2-7B's LaCo is 24.2% in Table 1, below the abstract's 25%: at its own ratio it is judged."""
    models = good_models()
    models["laco"]["record"]["parameters"]["pruning_ratio"] = 0.242
    _, verdicts = verdicts_of(tmp_path, models, profile="baichuan2-7b")
    assert by_claim(verdicts)["laco-avg-retention"].status == PASS
    _, verdicts = verdicts_of(tmp_path, models, profile="smollm2-135m")
    assert by_claim(verdicts)["laco-avg-retention"].status == NOT_AT_CONDITIONS


def test_an_undecided_comparison_is_inconclusive_with_the_items_that_would_decide(tmp_path):
    models = good_models()
    models["laco"]["accuracy"] = {t: s + 0.01 for t, s in models["llm-pruner"]["accuracy"].items()}
    models["slicegpt"]["accuracy"] = {t: s - 0.10 for t, s in models["llm-pruner"]["accuracy"].items()}
    _, verdicts = verdicts_of(tmp_path, models)
    v = by_claim(verdicts)["laco-beats-width-baselines"]
    rows = {r.other: r for r in v.rows}
    assert rows["llm-pruner"].status == INCONCLUSIVE and v.status == INCONCLUSIVE
    needed = rows["llm-pruner"].items_needed
    assert set(needed) == set(DENSE_SCORES) and all(n > 200 for n in needed.values())
    assert rows["slicegpt"].status == PASS


def test_missing_measurements_are_never_passed(tmp_path):
    models = good_models()
    models["laco"]["omit"] = ["accuracy", "throughput_hf", "pruning_time"]
    models["laco"]["vllm"] = "vllm not installed in this environment"
    del models["drop"]
    _, verdicts = verdicts_of(tmp_path, models)
    v = by_claim(verdicts)
    for claim in ("laco-avg-retention", "laco-min-benchmark-retention", "laco-beats-width-baselines",
                  "laco-throughput-vs-dense", "laco-throughput-above-baselines",
                  "laco-pruning-time-below-baselines", "laco-loads-in-vllm", "merge-beats-drop"):
        assert v[claim].status == NOT_MEASURED, claim
    assert "laco: no accuracy result" in v["laco-avg-retention"].rows[0].note
    assert "vllm not installed" in v["laco-loads-in-vllm"].rows[0].note
    assert "run has no drop model" in v["merge-beats-drop"].rows[0].note
    assert v["laco-memory-below-dense"].status == PASS


def test_results_of_an_older_model_are_stale_not_reused(tmp_path):
    models = good_models()
    models["laco"]["stale"] = ["perplexity"]
    run, verdicts = verdicts_of(tmp_path, models)
    assert run.stale == ["laco/perplexity"] and run.ok("laco", "perplexity") is None
    v = by_claim(verdicts)["laco-ppl-below-baselines"]
    assert v.status == NOT_MEASURED and "stale" in v.rows[0].note


def test_a_baseline_pruned_harder_than_laco_is_out_of_the_comparison(tmp_path):
    models = good_models()
    models["slicegpt"]["record"]["parameters"]["pruning_ratio"] = 0.35
    models["drop"]["record"]["parameters"]["pruning_ratio"] = 0.20
    _, verdicts = verdicts_of(tmp_path, models)
    rows = {r.other: r for r in by_claim(verdicts)["laco-beats-width-baselines"].rows}
    assert rows["llm-pruner"].status == PASS
    assert rows["slicegpt"].status == NOT_AT_CONDITIONS and "35.0%" in rows["slicegpt"].note
    assert by_claim(verdicts)["laco-beats-width-baselines"].status == PASS  # judged on the matched baseline
    assert by_claim(verdicts)["merge-beats-drop"].status == NOT_AT_CONDITIONS  # 20% vs 27%: nothing in scope


def test_models_scored_on_different_items_are_not_compared(tmp_path):
    run_dir = write_run(tmp_path / "run", good_models())
    path = run_dir / "results" / "llm-pruner" / "accuracy.json"
    doc = json.loads(path.read_text())
    doc["values"]["items"]["piqa"]["doc_id"][0] = 9999
    path.write_text(json.dumps(doc))
    verdicts = {(v.claim.id, v.subject): v for v in judge_run(load_run(run_dir), load_claims())}
    rows = {r.other: r for r in by_claim(verdicts)["laco-beats-width-baselines"].rows}
    assert rows["llm-pruner"].status == NOT_MEASURED
    assert "different items of piqa" in rows["llm-pruner"].note and "1 only in laco" in rows["llm-pruner"].note


def test_a_speedup_above_the_compute_bound_ideal_is_flagged_and_decides_nothing(tmp_path):
    models = good_models()
    models["laco"]["hf"] = 40.0  # x2 over dense's 20 tok/s with x1.38 fewer FLOPs per token: impossible
    models["laco"]["vllm"] = None
    _, verdicts = verdicts_of(tmp_path, models)
    row = by_claim(verdicts)["laco-throughput-vs-dense"].rows[0]
    ideal = models["dense"]["flops"] / models["laco"]["flops"]
    assert row.interval.low > ideal
    assert row.status == INCONCLUSIVE and any(f.startswith("implausible: noise") for f in row.flags)
    assert f"×{ideal:.3f}" in " ".join(row.flags)


def test_throughput_is_decided_on_vllm_only_when_every_model_of_the_comparison_loads_there(tmp_path):
    _, verdicts = verdicts_of(tmp_path, good_models())
    assert {r.engine for r in by_claim(verdicts)["laco-throughput-vs-dense"].rows} == {"vllm"}
    assert {r.engine for r in by_claim(verdicts)["laco-throughput-above-baselines"].rows} == {"hf"}  # baselines: n/a


def test_throughput_of_another_phase_is_not_paired(tmp_path):
    run_dir = write_run(tmp_path / "run", good_models())
    path = run_dir / "results" / "laco" / "throughput_hf.json"
    doc = json.loads(path.read_text())
    doc["values"]["phase"] = "another-day"
    path.write_text(json.dumps(doc))
    verdicts = {(v.claim.id, v.subject): v for v in judge_run(load_run(run_dir), load_claims())}
    assert by_claim(verdicts)["laco-throughput-above-baselines"].status == NOT_MEASURED


def test_loadability(tmp_path):
    models = good_models()
    models["laco"]["record"]["loadable"]["vllm"] = False
    models["laco"]["vllm"] = None
    models["laco"]["record"]["loader"] = "somewhere:custom_loader"
    _, verdicts = verdicts_of(tmp_path, models)
    assert by_claim(verdicts)["laco-loads-in-vllm"].status == FAIL
    assert by_claim(verdicts)["laco-loads-in-transformers"].status == FAIL


def test_a_saved_config_that_forgot_the_deleted_layers_fails_the_loading_claim(tmp_path):
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 30}))
    models = good_models()
    models["laco"]["saved"] = str(folder)  # the record says 21 layers after pruning
    _, verdicts = verdicts_of(tmp_path, models)
    v = by_claim(verdicts)["laco-loads-in-transformers"]
    assert v.status == FAIL and "num_hidden_layers=30 but the model has 21 layers" in v.rows[0].note


def test_gating_follows_the_profile(tmp_path, claims):
    assert claims.get("laco-avg-retention").gated_for("llama2-7b")
    assert not claims.get("laco-avg-retention").gated_for("smollm2-135m")
    assert claims.get("laco-memory-below-dense").gated_for("smollm2-135m")


def test_the_papers_figure_stands_beside_ours_labelled_by_model(tmp_path):
    _, own = verdicts_of(tmp_path, good_models(), profile="llama2-7b")
    v = by_claim(own)
    assert "LaCo 80.28 (Table 2 Per., Llama2-7B)" in v["laco-avg-retention"].paper
    assert "LaCo 13.93 vs LLMPru. 17.3 (Table 3 PPL, Llama2-7B)" in v["laco-ppl-below-baselines"].paper
    assert "LaCo 49.15 vs Dense 37.13 (Table 20 tokens_per_s, Baichuan2-7B)" in by_claim(  # printed "Dense" there
        verdicts_of(tmp_path, good_models(), profile="baichuan2-7b")[1])["laco-throughput-vs-dense"].paper
    _, other = verdicts_of(tmp_path, good_models(), profile="smollm2-135m")
    assert "Llama2-7B (another model)" in by_claim(other)["laco-avg-retention"].paper


def test_profile_acceptance_criteria_are_gated_claims_against_dense(tmp_path):
    models = good_models()
    models["laco"]["ppl"] = 18.2 * 60  # perplexity went from 18 to about 1,100
    criterion = {"id": "ppl-within-3x", "statement": "perplexity within 3x dense", "subject": "laco",
                 "metric": "perplexity.ppl", "comparison": "<=", "threshold": 3.0, "gate": True}
    _, verdicts = verdicts_of(tmp_path, models, acceptance=[criterion])
    v = by_claim(verdicts)["profile:ppl-within-3x"]
    assert v.gated and v.status == FAIL and v.rows[0].interval.low > 3.0


def test_a_bad_claims_file_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "claims.toml"
    path.write_text('[roles]\nlaco = ["laco"]\n[[claim]]\nid = "x"\nstatement="s"\nsource="s"\npaper_figure="p"\n'
                    'kind = "retention"\nmetric = "accuracy.average"\nthreshhold = 0.8\n')
    with pytest.raises(LacoError, match=r"claims.toml: unknown key 'claim.0.threshhold'"):
        load_claims(path)
    path.write_text('[roles]\nlaco = ["laco"]\n[[claim]]\nid = "x"\nstatement="s"\nsource="s"\npaper_figure="p"\n'
                    'kind = "versus"\nmetric = "accuracy.average"\nagainst = "nobody"\n')
    with pytest.raises(LacoError, match="unknown role 'nobody'"):
        load_claims(path)
    with pytest.raises(LacoError, match="not a run directory"):
        load_run(tmp_path)


def test_a_depth_pruned_speedup_over_a_width_baseline_is_bounded_by_the_layer_ratio(tmp_path):
    # equal FLOPs, 30 vs 21 layers: a decode step is per-layer overhead plus FLOP work, so LaCo may be up to
    # 30/21 = x1.43 faster than the width baseline, never more
    models = good_models()
    models["llm-pruner"].update(flops=models["laco"]["flops"], layers=30, hf=20.0)
    models["laco"].update(layers=21, hf=26.0)  # x1.3: below the layer ratio, decided
    _, verdicts = verdicts_of(tmp_path / "a", models)
    row = next(r for r in by_claim(verdicts)["laco-throughput-above-baselines"].rows if r.other == "llm-pruner")
    assert row.status == PASS and not any(f.startswith("implausible") for f in row.flags)
    assert "compute-bound ideal ×1.000, layer ratio ×1.429" in row.flags
    models["laco"].update(hf=32.0)  # x1.6: above both ceilings
    _, verdicts = verdicts_of(tmp_path / "b", models)
    row = next(r for r in by_claim(verdicts)["laco-throughput-above-baselines"].rows if r.other == "llm-pruner")
    assert row.status == INCONCLUSIVE and row.flags[0].startswith("implausible: noise")
