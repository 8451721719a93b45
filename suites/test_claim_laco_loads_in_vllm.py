"""Claim `laco-loads-in-vllm` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-loads-in-vllm"


def test_laco_output_serves_in_vllm(verdict, check):
    check(verdict)
