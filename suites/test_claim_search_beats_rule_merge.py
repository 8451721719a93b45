"""Claim `search-beats-rule-merge` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "search-beats-rule-merge"


def test_iterative_search_beats_rule_based_merging(verdict, check):
    check(verdict)
