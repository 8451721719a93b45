"""The paired statistics of the suites, checked against values derived by hand or by an independent route."""

import math

import numpy as np
import pytest
from scipy import stats

from suites import statistics as st


def test_identical_answers_give_exactly_zero_with_a_zero_width_interval():
    rng = np.random.default_rng(1)
    items = {t: {"a": (a := rng.integers(0, 2, 50)), "b": a.copy()} for t in ("x", "y", "z")}
    interval = st.bootstrap_tasks(items, lambda m: st.task_average(m, "a") - st.task_average(m, "b"))
    assert (interval.estimate, interval.low, interval.high) == (0.0, 0.0, 0.0)
    ratio = st.bootstrap_tasks(items, lambda m: st.safe_ratio(st.task_average(m, "a"), st.task_average(m, "b")))
    assert (ratio.estimate, ratio.low, ratio.high) == (1.0, 1.0, 1.0)


def test_point_estimate_is_the_mean_of_task_means():
    items = {"x": {"a": np.array([1, 1, 0, 0])}, "y": {"a": np.array([1, 1, 1, 1, 1, 0, 0, 0, 0, 0])}}
    interval = st.bootstrap_tasks(items, lambda m: st.task_average(m, "a"))
    assert interval.estimate == pytest.approx((0.5 + 0.5) / 2)  # each task weighs alike, not each item


def test_resampling_keeps_each_tasks_size_and_pairs_the_series():
    """Stratified: every resample of a task draws as many items as the task has, the same ones for
    every series. With b = 1 - a the two means always sum to exactly 1."""
    items = {"x": {"a": np.array([1, 0, 1, 1, 0, 0, 1]), "b": np.array([0, 1, 0, 0, 1, 1, 0])}}
    means = st.stratified_means(items, resamples=500, seed=3)
    assert np.allclose(means["x"]["a"] + means["x"]["b"], 1.0)
    # a mean of 7 draws of 0/1 is a multiple of 1/7
    assert np.allclose(means["x"]["a"] * 7, np.round(means["x"]["a"] * 7))


def test_the_interval_of_a_mean_matches_the_binomial_width():
    """200 items at 60%: the bootstrap interval of the score is close to the normal one,
    0.6 +- 1.96 sqrt(0.6 0.4 / 200) = +-0.068 (independent formula)."""
    a = np.array([1] * 120 + [0] * 80)
    interval = st.bootstrap_tasks({"t": {"a": a}}, lambda m: st.task_average(m, "a"), resamples=8000)
    half = 1.96 * math.sqrt(0.6 * 0.4 / 200)
    assert interval.estimate == 0.6
    assert interval.low == pytest.approx(0.6 - half, abs=0.012) and interval.high == pytest.approx(0.6 + half, abs=0.012)


def test_pairing_narrows_the_interval_of_a_difference():
    """b answers like a except on 6 of 200 items: the paired interval of b - a is a few points wide,
    far narrower than the unpaired sqrt(se_a^2 + se_b^2) bound (about +-9.6 points)."""
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2, 200)
    b = a.copy()
    b[np.flatnonzero(a)[:6]] = 0  # 6 items lost
    interval = st.bootstrap_tasks({"t": {"a": a, "b": b}}, lambda m: m["t"]["b"] - m["t"]["a"])
    assert interval.estimate == pytest.approx(-6 / 200)
    assert interval.high < 0  # a paired-significant drop
    unpaired = 1.96 * math.sqrt(2 * 0.25 / 200)
    assert interval.width < unpaired / 2


def test_seeded_bootstrap_is_reproducible():
    items = {"t": {"a": np.arange(30) % 2, "b": np.arange(30) % 3 == 0}}
    f = lambda m: st.task_average(m, "a") - st.task_average(m, "b")  # noqa: E731
    assert st.bootstrap_tasks(items, f, seed=5) == st.bootstrap_tasks(items, f, seed=5)


def test_an_undefined_resample_makes_the_interval_unbounded():
    """A ratio over a dense score that some resamples bring to 0/0 has no interval."""
    items = {"t": {"a": np.array([0, 0, 0, 1]), "d": np.array([0, 0, 0, 1])}}
    interval = st.bootstrap_tasks(items, lambda m: st.safe_ratio(m["t"]["a"], m["t"]["d"]), resamples=2000)
    assert interval.undefined > 0 and math.isinf(interval.low) and math.isinf(interval.high)


def test_mcnemar_is_the_exact_binomial_test_on_discordant_items():
    a = np.array([1] * 10 + [0] * 3 + [1] * 20 + [0] * 7)
    b = np.array([0] * 10 + [1] * 3 + [1] * 20 + [0] * 7)
    result = st.mcnemar(a, b)
    assert (result["a_only"], result["b_only"]) == (10, 3)
    # two-sided exact p for 3 of 13 at 1/2: 2 * P(X <= 3), X ~ Binomial(13, 1/2)
    expected = 2 * sum(math.comb(13, k) for k in range(4)) / 2**13
    assert result["p_value"] == pytest.approx(expected)
    assert st.mcnemar(a, a)["p_value"] == 1.0


def test_perplexity_ratio_of_windows():
    nll_a = np.array([2.0, 3.0, 4.0]) * 511
    nll_b = np.array([1.0, 2.0, 3.0]) * 511
    interval = st.perplexity_ratio(nll_a, nll_b, 511)
    assert interval.estimate == pytest.approx(math.e)  # one nat per token more on every window
    assert interval.low == pytest.approx(math.e) and interval.high == pytest.approx(math.e)
    same = st.perplexity_ratio(nll_a, nll_a, 511)
    assert (same.low, same.high) == (1.0, 1.0)


def test_round_ratio_cancels_a_drift_shared_by_the_round():
    """Both models slow down together round by round: the paired ratio stays exactly 1.25."""
    drift = np.array([1.0, 0.6, 1.3, 0.8, 1.1])
    interval = st.round_ratio(12.5 * drift, 10.0 * drift)
    assert interval.estimate == pytest.approx(1.25) and interval.width == pytest.approx(0, abs=1e-12)
    with pytest.raises(ValueError, match="same rounds"):
        st.round_ratio([1, 2], [1])


def test_independent_ratio_of_medians():
    interval = st.independent_ratio([2.0, 2.2, 1.8], [4.0, 4.4, 3.6])
    assert interval.estimate == pytest.approx(0.5)
    assert interval.low <= 0.5 <= interval.high


def test_items_to_decide_scales_with_the_square_of_half_width_over_effect():
    interval = st.Interval(0.05, -0.01, 0.11)  # effect 0.05 above 0, half-width 0.06 toward 0
    needed = st.items_to_decide(interval, 0.0, {"x": 100, "y": 40})
    assert needed == {"x": math.ceil(100 * (0.06 / 0.05) ** 2), "y": math.ceil(40 * 1.44)}
    assert st.items_to_decide(st.Interval(0.0, -0.1, 0.1), 0.0, {"x": 10}) is None  # no effect: no n decides


def test_percentile_interval_agrees_with_numpy_quantiles():
    draws = stats.norm.rvs(size=5000, random_state=2)
    interval = st.percentile_interval(0.0, draws, "t")
    assert interval.low == pytest.approx(np.quantile(draws, 0.025), abs=0.01)
    assert interval.high == pytest.approx(np.quantile(draws, 0.975), abs=0.01)
