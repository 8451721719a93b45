"""Claim `laco-avg-retention` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-avg-retention"


def test_laco_keeps_80_percent_of_dense_average(verdict, check):
    check(verdict)
