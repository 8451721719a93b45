"""Claim `laco-memory-below-baselines` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-memory-below-baselines"


def test_laco_takes_less_memory_than_width_baselines(verdict, check):
    check(verdict)
