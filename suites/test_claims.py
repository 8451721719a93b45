"""Every claim of the claims files (suites/claims/<paper>.toml) and every acceptance criterion of the
run's profile, judged per model of the run (the cases are generated in conftest.py):
`pytest suites --run runs/ID -k CLAIM`."""


def test_claim(verdict, check):
    check(verdict)
