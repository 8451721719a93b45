"""Claim `laco-beats-width-baselines` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-beats-width-baselines"


def test_laco_average_beats_llm_pruner_and_slicegpt(verdict, check):
    check(verdict)
