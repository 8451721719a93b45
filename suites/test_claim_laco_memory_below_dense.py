"""Claim `laco-memory-below-dense` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-memory-below-dense"


def test_laco_takes_less_memory_than_dense(verdict, check):
    check(verdict)
