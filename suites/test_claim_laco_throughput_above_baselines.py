"""Claim `laco-throughput-above-baselines` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-throughput-above-baselines"


def test_laco_generates_faster_than_width_baselines(verdict, check):
    check(verdict)
