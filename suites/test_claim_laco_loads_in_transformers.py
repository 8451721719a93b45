"""Claim `laco-loads-in-transformers` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "laco-loads-in-transformers"


def test_laco_output_loads_in_stock_transformers(verdict, check):
    check(verdict)
