"""The run's profile's own release criteria (`acceptance` in its bench profile), one test per criterion and model."""

from suites.conftest import ACCEPTANCE

CLAIM = ACCEPTANCE


def test_profile_acceptance_criterion(verdict, check):
    check(verdict)
