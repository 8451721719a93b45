"""The post-training claims (LaCo §4.1, Tables 6, 21, 24, Fig. 3; CoMe's distillation) judged on synthetic
runs whose outcome is set by the fixture's scores, perplexities and loss curves; the report's post-training
section and plots; the shipped post-training profile."""

import tomllib

import numpy as np
import pytest
from pydantic import ValidationError
from run_fixtures import depth_models, loss_curve, post_trained_models, write_run

from bench.profile import load_profile
from suites.claims import Claim, load_claims, suites_data
from suites.evidence import load_run
from suites.report import render, write_report
from suites.verdicts import EQUAL, FAIL, NOT_MEASURED, PASS, judge_run

POST_TRAINING_CLAIMS = {"post-training-improves-accuracy", "post-training-lowers-perplexity", "laco-inherits-parameters",
                        "re-pruned-keeps-post-trained-share", "post-trained-laco-beats-post-trained-width",
                        "come-distillation-improves"}


def verdicts_of(tmp_path, models):
    run = load_run(write_run(tmp_path / "run", models))
    return {(v.claim.id, v.subject): v for v in judge_run(run, load_claims())}


def lowered(scores: dict, by: float) -> dict:
    return {task: score - by for task, score in scores.items()}


def test_a_run_without_post_training_lists_none_of_the_post_training_claims(tmp_path):
    verdicts = verdicts_of(tmp_path, depth_models())
    assert not POST_TRAINING_CLAIMS & {claim for claim, _ in verdicts}
    assert {c.id for c in load_claims().claims if c.stage != "pruned"} == POST_TRAINING_CLAIMS


def test_post_training_clearly_above_its_pruned_model_passes_and_the_estimate_is_the_score_difference(tmp_path):
    models = post_trained_models()
    verdicts = verdicts_of(tmp_path, models)
    accuracy = verdicts[("post-training-improves-accuracy", "laco-continue")]
    assert accuracy.status == PASS and [r.other for r in accuracy.rows] == ["laco"]
    expected = np.mean(list(models["laco-continue"]["accuracy"].values())) - np.mean(list(models["laco"]["accuracy"].values()))
    assert accuracy.rows[0].interval.estimate == pytest.approx(expected)
    ppl = verdicts[("post-training-lowers-perplexity", "laco-continue")]
    assert ppl.status == PASS and ppl.rows[0].interval.estimate == pytest.approx(30.0 / 40.0)
    # every post-trained model is paired with its own pruned model, the random-init control is no subject
    subjects = {s: v.rows[0].other for (c, s), v in verdicts.items() if c == "post-training-improves-accuracy"}
    assert subjects == {"laco-continue": "laco", "llm-pruner-lora": "llm-pruner", "come-distill": "come"}
    assert verdicts[("come-distillation-improves", "come-distill")].status == PASS
    assert {s for c, s in verdicts if c == "come-distillation-improves"} == {"come-distill"}  # recipe distill only


def test_post_training_clearly_below_its_pruned_model_fails(tmp_path):
    models = post_trained_models()
    models["laco-continue"].update(accuracy=lowered(models["laco"]["accuracy"], 0.07), ppl=50.0)
    verdicts = verdicts_of(tmp_path, models)
    assert verdicts[("post-training-improves-accuracy", "laco-continue")].status == FAIL
    assert verdicts[("post-training-lowers-perplexity", "laco-continue")].status == FAIL


def test_a_post_trained_model_identical_to_its_pruned_model_is_equal_not_a_gain(tmp_path):
    models = post_trained_models()
    models["laco-continue"].update(same_as="laco", accuracy=models["laco"]["accuracy"], ppl=models["laco"]["ppl"])
    verdicts = verdicts_of(tmp_path, models)
    for claim in ("post-training-improves-accuracy", "post-training-lowers-perplexity"):
        row = verdicts[(claim, "laco-continue")].rows[0]
        assert row.status == EQUAL and row.interval.low == pytest.approx(row.interval.high), claim


@pytest.mark.parametrize("control_start, control_end, expected", [(10.0, 6.5, PASS), (3.6, 2.8, EQUAL), (3.0, 2.0, FAIL)])
def test_the_training_loss_against_the_random_init_control(tmp_path, control_start, control_end, expected):
    """The control's curve: clearly higher (PASS), LaCo's own (EQUAL: the same curve, ratio exactly 1), lower (FAIL)."""
    models = post_trained_models()
    key = "laco-random" if expected != EQUAL else "laco-continue"  # the same noise: an identical curve
    curve = loss_curve(key, control_start, control_end)
    models["laco-random"]["record"]["post_training"]["loss_curve"] = curve
    verdict = verdicts_of(tmp_path, models)[("laco-inherits-parameters", "laco-continue")]
    row = verdict.rows[0]
    assert verdict.status == expected and row.other == "laco-random"
    own = models["laco-continue"]["record"]["post_training"]["loss_curve"]
    tail = slice(-10, None)  # 100 logged steps: the last 10%
    ratio = np.exp(np.mean(np.log([p["loss"] for p in own[tail]]) - np.log([p["loss"] for p in curve[tail]])))
    assert row.interval.estimate == pytest.approx(ratio)


def test_without_a_random_init_control_the_loss_claim_is_not_measured(tmp_path):
    models = post_trained_models()
    del models["laco-random"]
    verdict = verdicts_of(tmp_path, models)[("laco-inherits-parameters", "laco-continue")]
    assert verdict.status == NOT_MEASURED and "random-init-control" in verdict.rows[0].note


def test_the_same_pruning_is_found_by_its_settings_when_the_fingerprints_differ(tmp_path):
    models = post_trained_models()
    models["laco-continue"]["pruned"]["fingerprint"] = "fp-another-pruning"
    models["laco-random"]["pruned"]["fingerprint"] = "fp-another-pruning"
    assert verdicts_of(tmp_path / "a", models)[("post-training-improves-accuracy", "laco-continue")].status == NOT_MEASURED
    models["laco"]["prune_settings_hash"] = models["laco-continue"]["prune_settings_hash"] = "same-settings"
    verdict = verdicts_of(tmp_path / "b", models)[("post-training-improves-accuracy", "laco-continue")]
    assert verdict.status == PASS and verdict.rows[0].other == "laco"


def test_the_re_pruned_share_is_table_6s_and_judged_against_the_post_trained_model(tmp_path):
    claim = load_claims().get("re-pruned-keeps-post-trained-share")
    table6 = next(t for t in tomllib.loads(suites_data("paper_figures.toml").read_text())["tables"] if t["number"] == 6)
    avg = {r.get("setting"): r["values"]["Avg."] for r in table6["rows"] if r["model"] == "Llama2-7B"}
    assert claim.threshold == round(avg["LaCo +post train +re prune"] / avg["LaCo +post train"], 3)
    models = post_trained_models()
    verdict = verdicts_of(tmp_path / "a", models)[("re-pruned-keeps-post-trained-share", "laco-re-pruned")]
    assert verdict.status == PASS and verdict.rows[0].other == "laco-continue"
    models["laco-re-pruned"]["accuracy"] = {t: 0.6 * s for t, s in models["laco-continue"]["accuracy"].items()}
    assert verdicts_of(tmp_path / "b", models)[("re-pruned-keeps-post-trained-share", "laco-re-pruned")].status == FAIL


def test_post_trained_laco_against_post_trained_llm_pruner_shows_each_training_cost(tmp_path):
    verdicts = verdicts_of(tmp_path, post_trained_models())
    verdict = verdicts[("post-trained-laco-beats-post-trained-width", "laco-continue")]
    assert verdict.status == PASS and [r.other for r in verdict.rows] == ["llm-pruner-lora"]
    cost = next(f for f in verdict.rows[0].flags if f.startswith("training cost"))
    assert "laco-continue continue 102,400 tokens, 600 s wall" in cost and "llm-pruner-lora lora 102,400 tokens, 900 s" in cost


def test_the_papers_other_claims_never_judge_a_post_trained_model(tmp_path):
    verdicts = verdicts_of(tmp_path, post_trained_models())
    for (claim, subject), verdict in verdicts.items():
        if claim not in POST_TRAINING_CLAIMS:
            assert subject not in ("laco-continue", "laco-random", "llm-pruner-lora", "come-distill"), claim
            assert not {r.other for r in verdict.rows} & {"laco-continue", "llm-pruner-lora", "come-distill"}, claim


def test_a_relation_is_refused_for_a_stage_it_is_not_defined_for():
    with pytest.raises(ValidationError, match="needs stage = 'post-trained'"):
        Claim(id="x", statement="s", source="s", paper_figure="p", kind="versus", metric="accuracy.average",
              against="before-post-training")
    with pytest.raises(ValidationError, match="random-init-control"):
        Claim(id="x", statement="s", source="s", paper_figure="p", kind="versus", metric="post_training.loss",
              stage="post-trained", against="dense")


def test_the_report_shows_every_post_trained_model_and_draws_both_plots(tmp_path):
    run = load_run(write_run(tmp_path / "run", post_trained_models()))
    text, _ = render(run, load_claims())
    section = text[text.index("## Post-training"):].split("\n## ")[0]
    for key, recipe in (("laco-continue", "continue"), ("laco-random", "continue"), ("llm-pruner-lora", "lora"),
                        ("come-distill", "distill")):
        row = next(line for line in section.splitlines() if line.startswith(f"| {key} "))
        assert f" {recipe} " in row and "102,400" in row, key
    assert "random init" in next(line for line in section.splitlines() if line.startswith("| laco-random "))
    report = write_report(run, load_claims(), tmp_path / "reports")
    images = report.parent / run.id
    assert (images / "loss.png").stat().st_size > 10_000 and (images / "post-training.png").stat().st_size > 10_000
    assert "## Post-training" not in render(load_run(write_run(tmp_path / "plain", depth_models())), load_claims())[0]


def test_the_shipped_profile_pairs_every_post_training_with_its_control_and_re_prunes_the_trained_laco():
    _, profile = load_profile("laco-post-training")
    methods = {m.label: m for m in profile.methods}
    trained = {label: m.post_train for label, m in methods.items() if m.post_train}
    assert {label: (p.recipe, p.random_init) for label, p in trained.items()} == {
        "laco-27-post-trained": ("continue", False), "laco-27-random-init": ("continue", True),
        "llm-pruner-27-lora": ("lora", False), "come-27-distill": ("distill", False)}
    same_pruning = ("name", "target", "params", "calibration")
    for label in ("laco-27-post-trained", "laco-27-random-init"):  # paired with laco-27 by its settings
        assert [getattr(methods[label], k) for k in same_pruning] == [getattr(methods["laco-27"], k) for k in same_pruning]
    for trained_label, plain in (("come-27-distill", "come-27"), ("llm-pruner-27-lora", "llm-pruner-27")):
        assert [getattr(methods[trained_label], k) for k in same_pruning] == [getattr(methods[plain], k) for k in same_pruning]
    assert methods["laco-45-re-pruned"].source == "laco-27-post-trained" and methods["laco-45-re-pruned"].target == 0.45
    from laco.recipes import recipe_settings

    assert all(recipe_settings(p.recipe, p.params).tokens >= 100_000 for p in trained.values())
