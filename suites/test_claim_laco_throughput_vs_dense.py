"""Claim `laco-throughput-vs-dense` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-throughput-vs-dense"


def test_laco_generates_at_least_as_fast_as_dense(verdict, check):
    check(verdict)
