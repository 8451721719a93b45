"""The claims suites: `pytest suites --run runs/ID` judges a finished (or partial) bench run.

Each suite file names one claim of claims.toml (`CLAIM = "..."`) and is parametrised over the run's
models that the claim judges. The judging is `suites.verdicts`, the same code the report and
`laco gate` use; the suites print the claim's rows and assert once:
  PASS -> passed;  FAIL -> failed;  INCONCLUSIVE -> failed with the interval and the items that would
  decide (an undecided claim is not a pass);  not measured / not at the claim's conditions -> skipped
  with the reason (never passed).
Without --run every suite is skipped with a message saying how to give one.
"""

from __future__ import annotations

import pytest

from laco import LacoError
from suites.claims import load_claims
from suites.evidence import load_run
from suites.markdown import VERDICT_MARK, table
from suites.outcomes import FAIL, INCONCLUSIVE, PASS
from suites.verdicts import Judge

_STATE = pytest.StashKey[dict]()
ACCEPTANCE = "profile acceptance"  # CLAIM of the suite file that judges the profile's own criteria
NO_RUN = "no run given: judge one with `pytest suites --run runs/ID` (written by `laco bench`)"


def pytest_addoption(parser):
    group = parser.getgroup("laco claims")
    group.addoption("--run", help="run directory written by `laco bench` (runs/ID) to judge")
    group.addoption("--claims", help="claims file (default: the one shipped with the suites)")


def pytest_configure(config):
    state = {"judge": None}
    if config.getoption("--run", default=None):
        try:
            state["judge"] = Judge(load_run(config.getoption("--run")), load_claims(config.getoption("--claims")))
        except LacoError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = state


def _skip(why: str, name: str):
    return [pytest.param(None, marks=pytest.mark.skip(reason=why), id=name)]


def pytest_generate_tests(metafunc):
    if "subject" not in metafunc.fixturenames:
        return
    judge = metafunc.config.stash[_STATE]["judge"]
    if judge is None:
        metafunc.parametrize("subject", _skip(NO_RUN, "no-run"))
        return
    if metafunc.module.CLAIM == ACCEPTANCE:  # the profile's own release criteria, one test per (criterion, model)
        pairs = [(c, k) for c in judge.claims.for_run(judge.run) if c.id.startswith("profile:") for k in judge.subjects(c)]
        if not pairs:
            metafunc.parametrize("subject", _skip(f"profile {judge.run.profile_name} declares no acceptance criteria", "none"))
            return
        metafunc.parametrize("subject", pairs, ids=[f"{c.id.removeprefix('profile:')}-{k}" for c, k in pairs])
        return
    claim = judge.claims.get(metafunc.module.CLAIM)
    if not claim.applies_to(judge.run.profile_name):
        metafunc.parametrize("subject", _skip(f"claim {claim.id} does not apply to profile {judge.run.profile_name}", "n/a"))
        return
    keys = judge.subjects(claim)
    if not keys:
        metafunc.parametrize("subject", _skip(f"not measured: run {judge.run.id} has no {claim.subject} model", "none"))
        return
    metafunc.parametrize("subject", keys, ids=keys)


@pytest.fixture
def verdict(request, subject):
    judge = request.config.stash[_STATE]["judge"]
    if isinstance(subject, tuple):  # an acceptance criterion of the profile
        return judge.judge(*subject)
    return judge.judge(judge.claims.get(request.module.CLAIM), subject)


@pytest.fixture
def check():
    """Print the claim's rows, then assert once."""

    def _check(verdict):
        rows = [[r.other or "", r.ours, r.status, "; ".join([r.note, *r.flags])] for r in verdict.rows]
        text = table(rows, ["vs", "ours [95%]", "verdict", "note"])
        print(f"\n{verdict.claim.statement} ({verdict.claim.source})\npaper: {verdict.paper}\n{text}")
        if verdict.status == PASS:
            return
        if verdict.status in (FAIL, INCONCLUSIVE):  # the one assertion: an undecided claim is not a pass
            pytest.fail(f"{verdict.claim.id} is {verdict.status} for {verdict.subject}:\n{text}", pytrace=False)
        notes = dict.fromkeys(r.note for r in verdict.rows if r.status != PASS and r.note)
        pytest.skip(f"{verdict.status}: " + "; ".join(notes))

    return _check


def pytest_terminal_summary(terminalreporter, config):
    """The whole verdict table of the run, as the report shows it."""
    state = config.stash.get(_STATE, None)
    if not state or state["judge"] is None:
        return
    judge = state["judge"]
    rows = [[v.claim.id, v.subject, v.ours, VERDICT_MARK[v.status].strip("*") + (" (gated)" if v.gated else "")]
            for v in judge.all()]
    terminalreporter.write_sep("=", f"claims of run {judge.run.id} (profile {judge.run.profile_name})")
    terminalreporter.write_line(table(rows, ["claim", "model", "ours [95%]", "verdict"]))
