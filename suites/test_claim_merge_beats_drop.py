"""Claim `merge-beats-drop` of suites/claims.toml, judged per model of the run (see conftest.py)."""

CLAIM = "merge-beats-drop"


def test_merging_beats_dropping_at_the_same_ratio(verdict, check):
    check(verdict)
