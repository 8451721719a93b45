"""Claim `laco-every-benchmark-above-chance` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-every-benchmark-above-chance"


def test_laco_stays_above_chance_where_dense_is(verdict, check):
    check(verdict)
