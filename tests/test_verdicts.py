"""Claims judged on synthetic runs: verdicts by interval, conditions, chance, bounds and the paper beside us."""

import json

import numpy as np
import pytest
from importlib import resources

from run_fixtures import DATA_SET_ITEMS, DENSE_SCORES, depth_models, good_models, write_run

from laco import LacoError
from suites import statistics as st
from suites.claims import load_claims
from suites.evidence import load_run
from suites.outcomes import Row, Verdict, apply_holm
from suites.verdicts import EQUAL, FAIL, INCONCLUSIVE, NOT_AT_CONDITIONS, NOT_MEASURED, PASS, decide, judge_run


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


@pytest.mark.parametrize("low, high, expected", [(0.996, 1.004, EQUAL), (1.0003, 1.0003, EQUAL), (0.99, 0.998, PASS),
                                                 (1.002, 1.01, FAIL), (0.990, 0.999, PASS)])
def test_an_interval_wholly_inside_the_margin_is_equal_whatever_side_it_is_on(low, high, expected):
    band = (1 / 1.005, 1.005)  # memory: 0.5%
    assert decide(st.Interval((low + high) / 2, low, high), "<", 1.0, band) == expected


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
    _, verdicts = verdicts_of(tmp_path, depth_models())
    assert {c: v.status for c, v in by_claim(verdicts).items()} == {c: PASS for c in by_claim(verdicts)}
    retention = by_claim(verdicts)["laco-avg-retention"]
    laco = good_models()["laco"]["accuracy"]
    expected = np.mean([laco[t] / DENSE_SCORES[t] for t in DENSE_SCORES])  # the paper's Per.: mean of ratios
    assert retention.rows[0].interval.estimate == pytest.approx(expected)
    assert retention.rows[0].interval.low > 0.80


def test_identical_answers_are_a_difference_of_exactly_zero_and_equal_not_a_fail(tmp_path):
    """rule-merge holds LaCo's weights: the paired difference is 0 with a zero-width interval, inside the
    claim's 0.5-point margin, so "search beats rule" reads equal (within margin): neither FAIL nor PASS."""
    models = good_models()
    models["rule-merge"].update(same_as="laco", accuracy=models["laco"]["accuracy"], weights="w-laco")
    _, verdicts = verdicts_of(tmp_path, models)
    v = by_claim(verdicts)["search-beats-rule-merge"]
    row = v.rows[0]
    assert (row.interval.estimate, row.interval.low, row.interval.high) == (0.0, 0.0, 0.0)
    assert row.status == EQUAL and v.status == EQUAL and "+0.0 [+0.0, +0.0] pt" in row.ours


# the issue's margins: parameters and memory 0.5%, accuracy 0.5 point, speed (and pruning time) 2%
ISSUE_MARGINS = {"memory.param_mb": 0.005, "accuracy.average": 0.005, "throughput.decode_tokens_per_s": 0.02,
                 "pruning_time.seconds": 0.02}


def _beyond(claim, near: float, far: float) -> st.Interval:
    """An interval wholly on the failing side of the claim's threshold, from `near` to `far` margins away
    (accuracy: a difference in points around 0; ratios: relative to the threshold)."""
    m, sign = claim.margin, 1 if claim.comparison in ("<", "<=") else -1
    if claim.metric.startswith("accuracy."):
        ends = sorted((sign * near * m, sign * far * m))
    else:
        ends = sorted((claim.threshold * (1 + near * m) ** sign, claim.threshold * (1 + far * m) ** sign))
    return st.Interval(sum(ends) / 2, *ends)


def test_every_comparative_claim_reads_a_tie_inside_its_margin_as_equal_never_fail(claims):
    """For each versus claim of both papers: its declared margin is the issue's for its metric; an interval
    wholly beyond the threshold but inside the margin (a FAIL without one) is equal; one that reaches past
    the margin still FAILs; one straddling the threshold inside the margin is equal, not undecided."""
    versus = [c for c in claims.claims if c.kind == "versus"]
    assert len(versus) >= 10 and all(c.margin is not None for c in versus)
    for claim in versus:
        if claim.metric in ISSUE_MARGINS:
            assert claim.margin == ISSUE_MARGINS[claim.metric], claim.id
        centre = 0.0 if claim.metric.startswith("accuracy.") else claim.threshold
        tie = _beyond(claim, 0.1, 0.9)
        assert decide(tie, claim.comparison, centre) == FAIL, claim.id
        assert decide(tie, claim.comparison, centre, claim.equal_band()) == EQUAL, claim.id
        assert decide(_beyond(claim, 0.1, 1.5), claim.comparison, centre, claim.equal_band()) == FAIL, claim.id
        straddle = st.Interval(centre, *sorted((_beyond(claim, 0.5, 0.5).low, _beyond(claim, -0.5, -0.5).low)))
        assert decide(straddle, claim.comparison, centre, claim.equal_band()) == EQUAL, claim.id


def test_a_tie_inside_the_margin_is_equal_never_fail_and_never_passes_the_gate(tmp_path):
    """The issue's tie: LaCo 364.6 MB against a baseline matched by parameter count at 364.5 MB (x1.0003,
    inside 0.5%) is equal, not FAIL; against dense at the same size, the gated memory claim is equal and
    blocks the gate like anything that is not a PASS."""
    from suites.gate import blocking

    models = good_models()
    models["laco"]["param_mb"] = 364.6
    models["llm-pruner"]["param_mb"], models["slicegpt"]["param_mb"] = 364.5, 370.0
    _, verdicts = verdicts_of(tmp_path / "a", models)
    rows = {r.other: r for r in by_claim(verdicts)["laco-memory-below-baselines"].rows}
    assert rows["llm-pruner"].status == EQUAL and rows["slicegpt"].status == PASS  # 370 is 1.5% more: a difference
    assert by_claim(verdicts)["laco-memory-below-baselines"].status == EQUAL
    models["dense"]["param_mb"] = 364.7
    _, verdicts = verdicts_of(tmp_path / "b", models)
    v = by_claim(verdicts)["laco-memory-below-dense"]
    assert v.status == EQUAL and v.gated and v in blocking(list(verdicts.values()))


def test_a_memory_claim_on_one_peak_measurement_says_so(tmp_path):
    path = tmp_path / "claims.toml"
    path.write_text(CLAIMS_HEAD + '[[claim]]\nid = "peak"\nstatement = "s"\nsource = "s"\npaper_figure = "p"\n'
                    'kind = "versus"\nmetric = "memory.peak_mb"\ncomparison = "<"\nagainst = "dense"\nmargin = 0.005\n')
    run = load_run(write_run(tmp_path / "run", good_models()))
    v = next(v for v in judge_run(run, load_claims(path)) if v.subject == "laco")
    assert v.status == PASS and v.rows[0].interval.method == "one measurement"
    assert "decided on a single peak_mb measurement of each model: no repeat, no interval" in v.rows[0].flags


def test_a_model_at_chance_fails_the_chance_aware_claims_and_cannot_pass_the_30_percent_floor(tmp_path):
    models = good_models()
    chance = {"hellaswag": 0.25, "piqa": 0.50, "arc_easy": 0.25, "winogrande": 0.50, "boolq": 0.50}
    models["laco"]["accuracy"] = chance
    _, verdicts = verdicts_of(tmp_path, models)
    v = by_claim(verdicts)
    floor = v["laco-min-benchmark-retention"]  # 25/43 .. 50/68: every ratio is above 0.30, and means nothing
    assert all(r.interval.low > 0.30 for r in floor.rows)
    assert floor.status == INCONCLUSIVE and {r.status for r in floor.rows} == {INCONCLUSIVE}
    assert all(any(f.startswith("not above chance: laco") for f in r.flags) and r.items_needed is None for r in floor.rows)
    assert all(r.ours.endswith("%, not above chance") for r in floor.rows)  # the reason beside the figure
    assert v["laco-avg-retention-above-chance"].status == FAIL
    above = v["laco-every-benchmark-above-chance"]  # exactly at chance: every interval holds 0, none passes
    assert above.status == INCONCLUSIVE and all(r.interval.contains(0.0) and r.status == INCONCLUSIVE for r in above.rows)
    assert any(f.startswith("at chance") for f in v["laco-avg-retention"].notes)


def test_a_benchmark_where_dense_is_at_chance_is_left_out_of_every_retention_claim(tmp_path):
    """Dense answers boolq at chance (50%): boolq leaves Per., the above-chance retention, the floor and the
    per-benchmark chance claim, and every one of those verdicts lists it with the reason."""
    models = good_models()
    models["dense"]["accuracy"] = dict(DENSE_SCORES, boolq=0.50)
    models["laco"]["accuracy"] = dict(models["laco"]["accuracy"], boolq=0.20)  # would be 40% of dense
    _, verdicts = verdicts_of(tmp_path, models)
    v = by_claim(verdicts)
    kept = [t for t in DENSE_SCORES if t != "boolq"]
    laco = models["laco"]["accuracy"]
    assert v["laco-avg-retention"].rows[0].interval.estimate == pytest.approx(np.mean([laco[t] / DENSE_SCORES[t] for t in kept]))
    for claim in ("laco-avg-retention", "laco-avg-retention-above-chance", "laco-min-benchmark-retention",
                  "laco-every-benchmark-above-chance"):
        assert len(v[claim].left_out) == 1 and v[claim].left_out[0].startswith("boolq: dense not above chance ("), claim
        assert "boolq" not in {r.other for r in v[claim].rows}, claim
    assert v["laco-beats-width-baselines"].left_out == []  # a comparison of two pruned models keeps every benchmark


def test_the_above_chance_companion_is_held_to_the_papers_own_laco(tmp_path):
    """The threshold is Llama2-7B's LaCo under the same formula (Table 1; another model for smollm2), by
    hand: chance per benchmark, CMNLI (Dense* 32.98 < 33.3) and WSC_P (37.50 < 50) left out like a
    benchmark where dense is at chance, the generation-mode columns and C3 without a chance level."""
    dense = {"HeSw": 71.35, "PIQA": 78.18, "CSQA": 66.67, "BoolQ": 70.67, "MMLU": 45.92, "CMMLU": 31.86,
             "Race_H": 35.51, "Race_M": 33.15}
    laco = {"HeSw": 55.69, "PIQA": 69.80, "CSQA": 45.70, "BoolQ": 64.07, "MMLU": 26.45, "CMMLU": 25.24,
            "Race_H": 22.61, "Race_M": 23.61}
    chance = {"HeSw": 25, "PIQA": 50, "CSQA": 20, "BoolQ": 50, "MMLU": 25, "CMMLU": 25, "Race_H": 25, "Race_M": 25}
    c = np.mean(list(chance.values()))
    expected = (np.mean(list(laco.values())) - c) / (np.mean(list(dense.values())) - c)
    assert expected == pytest.approx(0.4682, abs=1e-4)
    _, verdicts = verdicts_of(tmp_path, good_models())
    v = by_claim(verdicts)["laco-avg-retention-above-chance"]
    assert v.rows[0].threshold == pytest.approx(expected)
    assert "LaCo 46.8% (Table 1 under the same formula, Llama2-7B (another model); 8 benchmarks" in v.paper
    _, verdicts = verdicts_of(tmp_path / "13b", good_models(), profile="llama2-13b")  # the run's own model
    assert "Llama2-13B;" in by_claim(verdicts)["laco-avg-retention-above-chance"].paper


def test_the_paper_figure_under_the_same_formula_by_hand_on_three_benchmarks(claims):
    """Three columns of a Table 1 of our own: A (2 choices), B (4), C (4, dense at chance): (avg − chance)
    / (dense avg − chance) over A and B."""
    from suites.paper import Paper, PaperFiguresFile

    data = claims.paper.data.model_dump()
    data["benchmarks"] = {"A": {"choices": 2}, "B": {"choices": 4}, "C": {"choices": 4}, "D": {"no_chance": "generation"}}
    data["tables"] = [{"number": 1, "title": "t", "unit": "%", "columns": ["A", "B", "C", "D"], "rows": [
        {"model": "M", "method": "dense", "values": {"A": 80.0, "B": 60.0, "C": 24.0, "D": 30.0}},
        {"model": "M", "method": "laco", "values": {"A": 65.0, "B": 40.0, "C": 26.0, "D": 10.0}}]}]
    figure = Paper(PaperFiguresFile.model_validate(data), claims.paper.path).above_chance("M")
    assert figure.value == pytest.approx(((65 + 40) / 2 - (50 + 25) / 2) / ((80 + 60) / 2 - (50 + 25) / 2))
    assert figure.used == ("A", "B") and figure.left_out == ("C: Dense* 24 not above chance 25.0", "D: generation")


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
    assert set(needed) == set(DENSE_SCORES)
    for task, n in needed.items():  # beyond what the data set has: said, not printed as a size
        available = DATA_SET_ITEMS[task]
        assert (isinstance(n, int) and 200 < n <= available) or n == f"not decidable on this benchmark ({available} available)"
    assert needed["winogrande"] == "not decidable on this benchmark (1267 available)"  # +1 point needs far more
    assert rows["slicegpt"].status == PASS


def test_a_claim_of_several_rows_is_holm_corrected(tmp_path):
    """Each row shows the level its FAIL was tested at (2.5% / rows left, smallest p first) and the verdict
    its family-wise level, 5%."""
    _, verdicts = verdicts_of(tmp_path, good_models())
    v = by_claim(verdicts)["laco-beats-width-baselines"]
    assert v.family_level == pytest.approx(0.05)
    assert sorted(r.adjusted_level for r in v.rows) == pytest.approx([0.0125, 0.025])
    assert all(r.p_value == pytest.approx(1.0) for r in v.rows)  # LaCo ahead in every resample


def test_three_borderline_fails_fail_no_claim_after_holm_where_one_clear_fail_does(claims):
    """Rows whose intervals lie just beyond the threshold (p = 0.015: each alone a FAIL at 95%) fail the
    claim no more once three of them share it; a row at p = 0.001 does."""
    def rows(*ps):
        return [Row(FAIL if p <= 0.025 else INCONCLUSIVE, f"m{i}", "", p_value=p) for i, p in enumerate(ps)]

    claim = claims.get("laco-beats-width-baselines")
    for ps, expected in (((0.03, 0.03, 0.03), INCONCLUSIVE), ((0.015, 0.015, 0.015), INCONCLUSIVE),
                         ((0.001, 0.03, 0.03), FAIL), ((0.015,), FAIL)):
        verdict = Verdict(claim, "laco", rows(*ps), False, "")
        verdict.family_level = apply_holm(verdict.rows)
        assert verdict.status == expected and verdict.family_level == pytest.approx(0.05), ps
    borderline = rows(0.015, 0.015, 0.015)
    apply_holm(borderline)
    assert all("not at the Holm level of 3 rows" in r.flags[0] for r in borderline)


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


CLAIMS_HEAD = '[paper]\nname = "X"\ncitation = "c"\nyear = 2024\n[roles]\nlaco = ["laco"]\n'


def test_a_bad_claims_file_is_one_line_naming_the_key(tmp_path):
    path = tmp_path / "claims.toml"
    path.write_text(CLAIMS_HEAD + '[[claim]]\nid = "x"\nstatement="s"\nsource="s"\npaper_figure="p"\n'
                    'kind = "retention"\nmetric = "accuracy.average"\nthreshhold = 0.8\n')
    with pytest.raises(LacoError, match=r"claims.toml: unknown key 'claim.0.threshhold'"):
        load_claims(path)
    path.write_text(CLAIMS_HEAD + '[[claim]]\nid = "x"\nstatement="s"\nsource="s"\npaper_figure="p"\n'
                    'kind = "versus"\nmetric = "accuracy.average"\nagainst = "nobody"\n')
    with pytest.raises(LacoError, match="unknown role 'nobody'"):
        load_claims(path)
    path.write_text(CLAIMS_HEAD + '[[claim]]\nid = "x"\nstatement="s"\nsource="s"\npaper_figure="p"\n'
                    'kind = "retention"\nmetric = "accuracy.average"\nmargin = 0.01\n')
    with pytest.raises(LacoError, match="only a versus claim compares two figures and takes a margin"):
        load_claims(path)
    with pytest.raises(LacoError, match="not a run directory"):
        load_run(tmp_path)


def test_claims_come_one_file_per_paper_with_its_citation(claims):
    assert {claims.paper_of(c).name for c in claims.claims} == {"LaCo", "CoMe"}
    come = claims.get("come-avg-retention")
    assert "Layer as Puzzle Pieces" in claims.paper_of(come).citation and come.conditions.ratio == [0.27, 0.33]
    assert claims.claims[0].id == "laco-avg-retention"  # the older paper first
    laco_only = load_claims(resources.files("suites").joinpath("claims", "laco.toml"))
    assert {claims.paper_of(c).name for c in laco_only.claims} == {"LaCo"} and laco_only.paper.table(1)
    assert claims.get("laco-memory-below-baselines").equal_band() == pytest.approx((1 / 1.005, 1.005))
    assert claims.get("laco-beats-width-baselines").equal_band() == pytest.approx((-0.005, 0.005))


def test_the_come_claims_are_judged_on_a_run_that_measured_come(tmp_path):
    """CoMe at 27% keeps 96% of the dense average (>= 83%: PASS), trails LaCo (FAIL, 0.558 against 0.577)
    and beats ShortGPT; LaCo's own comparison with the depth baselines passes. A run without CoMe judges
    no CoMe claim at all."""
    models = depth_models()
    _, verdicts = verdicts_of(tmp_path / "a", models)
    come = by_claim(verdicts, "come")
    assert set(come) >= {"come-avg-retention", "come-beats-laco-and-shortgpt"}
    dense, ours = np.mean(list(DENSE_SCORES.values())), np.mean(list(models["come"]["accuracy"].values()))
    retention = come["come-avg-retention"]
    assert retention.status == PASS and retention.rows[0].interval.estimate == pytest.approx(ours / dense)
    rows = {r.other: r.status for r in come["come-beats-laco-and-shortgpt"].rows}
    assert rows == {"laco": FAIL, "shortgpt": PASS} and come["come-beats-laco-and-shortgpt"].status == FAIL
    depth = by_claim(verdicts)["laco-beats-depth-baselines"]
    assert depth.status == PASS and {r.other for r in depth.rows} == {"shortgpt", "come"}
    _, without = verdicts_of(tmp_path / "b", good_models())
    assert not any(c.startswith("come-") for c, _ in without)


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


def test_a_run_on_synthetic_weights_judges_speed_and_memory_and_no_quality(tmp_path):
    """A shaped stand-in (laco.synthetic) has seeded random weights: every accuracy and perplexity claim reads
    "not at the claim's conditions"; memory, speed and loading are judged exactly as on the same figures from
    real weights, and the report's first lines say what the weights are."""
    real = good_models()
    synthetic = good_models()
    for spec in synthetic.values():
        if "record" in spec:
            spec["record"] = {**spec["record"], "source": {
                **spec["record"]["source"], "model_id": "synthetic:llama2-7b", "kind": "synthetic",
                "synthetic": {"synthetic": True, "note": "synthetic weights: speed and memory only",
                              "name": "llama2-7b", "config_source": "a config", "tokenizer": {"vocab_size": 32000}}}}
    _, before = verdicts_of(tmp_path / "real", real)
    run, after = verdicts_of(tmp_path / "synthetic", synthetic)
    assert run.synthetic["name"] == "llama2-7b"
    quality = {key for key, v in before.items() if v.claim.metric.startswith(("accuracy.", "perplexity."))}
    assert {v.claim.metric.split(".")[0] for key, v in before.items() if key in quality} == {"accuracy", "perplexity"}
    for key, verdict in after.items():
        statuses = [row.status for row in verdict.rows]
        if key in quality:
            assert statuses == [NOT_AT_CONDITIONS], (key, statuses)
            assert "synthetic weights: speed and memory only" in verdict.rows[0].note
        else:
            assert statuses == [row.status for row in before[key].rows], key
    assert any(before[key].rows[0].status == PASS for key in quality)  # the same figures on real weights are judged
    from suites.report.overview import header
    first = header(run, list(after.values()))
    assert "**synthetic weights: speed and memory only**" in first and "cut to 32,000 tokens" in first
