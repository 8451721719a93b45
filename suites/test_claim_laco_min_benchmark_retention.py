"""Claim `laco-min-benchmark-retention` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-min-benchmark-retention"


def test_no_benchmark_falls_below_30_percent_of_dense(verdict, check):
    check(verdict)
