"""Claim `laco-pruning-time-below-baselines` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-pruning-time-below-baselines"


def test_laco_prunes_faster_than_width_baselines(verdict, check):
    check(verdict)
