"""Claim `laco-avg-retention-above-chance` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-avg-retention-above-chance"


def test_laco_keeps_80_percent_of_what_dense_scores_above_chance(verdict, check):
    check(verdict)
