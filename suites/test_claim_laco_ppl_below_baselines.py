"""Claim `laco-ppl-below-baselines` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-ppl-below-baselines"


def test_laco_perplexity_below_width_baselines(verdict, check):
    check(verdict)
