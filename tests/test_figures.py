"""A run's figures (suites.figures): the retention measures by their definitions, computed once per
render and read alike by the verdicts and the report, and the plausibility bound of a speed-up."""

import numpy as np
import pytest
from run_fixtures import DENSE_SCORES, TASKS, good_models, write_run

from suites import statistics as st
from suites.claims import KINDS, METRICS, load_claims
from suites.evidence import load_run
from suites.figures import Figures, Speedup
from suites.report import render
from suites.verdicts import KINDS as JUDGED_KINDS
from suites.verdicts import ROWS, Judge


@pytest.fixture(scope="module")
def good_run(tmp_path_factory):
    return load_run(write_run(tmp_path_factory.mktemp("figures") / "good", good_models()))


def test_retention_is_the_papers_per_and_the_share_above_chance(good_run):
    """The fixture's scores are exact (200 items per task), so the point estimates follow from them."""
    laco = good_models()["laco"]["accuracy"]
    chance = {t: 1 / TASKS[t][1] for t in laco}
    per = np.mean([laco[t] / DENSE_SCORES[t] for t in laco])
    above = (np.mean(list(laco.values())) - np.mean(list(chance.values()))) / (
        np.mean([DENSE_SCORES[t] for t in laco]) - np.mean(list(chance.values())))
    retention = Figures(good_run).retention("laco")
    assert retention.per.estimate == pytest.approx(per, abs=1e-12)
    assert retention.above_chance.estimate == pytest.approx(above, abs=1e-12)
    assert retention.tasks == len(laco)
    assert retention.per.low < retention.per.estimate < retention.per.high


def test_a_benchmark_where_dense_is_at_chance_is_left_out_of_per(tmp_path):
    """Dense at 50% on boolq (two choices): Per., the share of the dense average and the above-chance
    retention are taken over the four other benchmarks, and boolq is listed with its reason."""
    models = good_models()
    models["dense"]["accuracy"] = dict(DENSE_SCORES, boolq=0.50)
    # guessing on boolq would count as 100% "retained" beside 60-87% elsewhere
    models["laco"]["accuracy"] = {"hellaswag": 0.30, "piqa": 0.56, "arc_easy": 0.35, "winogrande": 0.52, "boolq": 0.50}
    retention = Figures(load_run(write_run(tmp_path / "run", models))).retention("laco")
    laco, kept = models["laco"]["accuracy"], [t for t in DENSE_SCORES if t != "boolq"]
    chance = np.mean([1 / TASKS[t][1] for t in kept])
    dense = np.mean([DENSE_SCORES[t] for t in kept])
    assert retention.tasks == 4 and list(retention.left_out) == ["boolq"]
    assert retention.left_out["boolq"].startswith("boolq: dense not above chance (+0.0 [")
    assert retention.per.estimate == pytest.approx(np.mean([laco[t] / DENSE_SCORES[t] for t in kept]), abs=1e-12)
    assert retention.of_average.estimate == pytest.approx(np.mean([laco[t] for t in kept]) / dense, abs=1e-12)
    assert retention.above_chance.estimate == pytest.approx((np.mean([laco[t] for t in kept]) - chance) / (dense - chance))
    with_boolq = np.mean([laco[t] / s for t, s in dict(DENSE_SCORES, boolq=0.50).items()])
    assert with_boolq - retention.per.estimate > 0.04  # leaving it out takes the guess's 100% away


def test_one_render_computes_each_figure_once(good_run, monkeypatch):
    """Verdicts, tables and plots read the same figures: no bootstrap runs twice on the same input."""
    calls = []
    bootstrap = st.bootstrap_tasks

    def recording(items, statistic, resamples=st.RESAMPLES, seed=None):
        interval = bootstrap(items, statistic, resamples, seed)
        calls.append((tuple((t, tuple(sorted(s))) for t, s in sorted(items.items())), interval))
        return interval

    monkeypatch.setattr(st, "bootstrap_tasks", recording)
    text, _ = render(good_run, load_claims())
    assert calls and len(set(calls)) == len(calls)
    s = load_claims().statistics
    per = Figures(good_run, s.resamples, s.seed).retention("laco").per
    accuracy = text.split("## Accuracy")[1].split("\n## ")[0]
    assert per.fmt(".1f", 100) in next(line for line in accuracy.splitlines() if line.startswith("| laco "))


def test_the_verdict_and_the_report_show_one_retention_interval(good_run):
    claims = load_claims()
    judge = Judge(good_run, claims)
    verdict = judge.judge(claims.get("laco-avg-retention"), "laco")
    assert verdict.rows[0].interval is judge.figures.retention("laco").per


@pytest.mark.parametrize("low, bound, implausible", [(1.31, 1.3, True), (1.3, 1.3, False), (1.1, 1.3, False),
                                                      (5.0, None, False)])
def test_a_speedup_wholly_above_its_ceiling_is_implausible(low, bound, implausible):
    assert Speedup(st.Interval(low + 0.1, low, low + 0.2), bound, bound).implausible is implausible


def test_every_claim_kind_and_compared_metric_has_its_judge():
    assert set(JUDGED_KINDS) == set(KINDS)
    assert {m.partition(".")[0] for m in METRICS if m} == set(ROWS)
