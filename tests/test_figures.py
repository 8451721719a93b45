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
