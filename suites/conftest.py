"""The claims suites: `pytest suites --run runs/ID` judges a finished (or partial) bench run.

Each suite file names one claim of claims.toml (`CLAIM = "..."`) and is parametrised over the
run's models that the claim judges (e.g. every LaCo model). The judging itself is
`laco.report.judge`, the same code the report and `laco gate` use; the suites only read the
run, print the claim's table, and assert once:
  PASS -> passed;  FAIL -> failed;  not measured -> skipped with the reason (never passed).
Without --run every suite is skipped with a message saying how to give one.
"""

from __future__ import annotations

import pytest

from laco import LacoError
from laco.report.judge import FAIL, NOT_MEASURED, judge, judge_run, load_claims, subjects
from laco.report.render import VERDICT_MARK, table
from laco.report.runs import load_run

_STATE = pytest.StashKey[dict]()
NO_RUN = "no run given: judge one with `pytest suites --run runs/ID` (written by `laco bench`)"


def pytest_addoption(parser):
    group = parser.getgroup("laco claims")
    group.addoption("--run", help="run directory written by `laco bench` (runs/ID) to judge")
    group.addoption("--claims", help="claims file (default: suites/claims.toml)")


def pytest_configure(config):
    state = {"run": None, "claims": None}
    if config.getoption("--run", default=None):
        try:
            state["run"] = load_run(config.getoption("--run"))
            state["claims"] = load_claims(config.getoption("--claims"))
        except LacoError as exc:
            raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = state


def pytest_generate_tests(metafunc):
    if "subject" not in metafunc.fixturenames:
        return
    state = metafunc.config.stash[_STATE]
    run, claims = state["run"], state["claims"]
    if run is None:
        metafunc.parametrize("subject", [pytest.param(None, marks=pytest.mark.skip(reason=NO_RUN))], ids=["no-run"])
        return
    claim = claims.get(metafunc.module.CLAIM)
    if not claim.applies_to(run.profile_name):
        why = f"claim {claim.id} does not apply to profile {run.profile_name}"
        metafunc.parametrize("subject", [pytest.param(None, marks=pytest.mark.skip(reason=why))], ids=["n/a"])
        return
    keys = subjects(run, claim, claims)
    if not keys:
        why = f"{NOT_MEASURED}: run {run.id} has no {claim.subject} model"
        metafunc.parametrize("subject", [pytest.param(None, marks=pytest.mark.skip(reason=why))], ids=["none"])
        return
    metafunc.parametrize("subject", keys, ids=keys)


@pytest.fixture
def verdict(request, subject):
    state = request.config.stash[_STATE]
    claims = state["claims"]
    return judge(state["run"], claims.get(request.module.CLAIM), subject, claims)


@pytest.fixture
def check():
    """Print the claim's whole table, then assert once."""

    def _check(verdict):
        text = table(verdict.table(), ["claim", "model", "vs", "ours", "verdict", "note", "noise"])
        print(f"\n{verdict.claim.statement} ({verdict.claim.source})\npaper: {verdict.paper}\n{text}")
        if verdict.status == NOT_MEASURED:
            notes = "; ".join(r.note for r in verdict.rows if r.status == NOT_MEASURED)
            pytest.skip(f"{NOT_MEASURED}: {notes}")
        if verdict.status == FAIL:  # the one assertion: any failing row fails the claim
            pytest.fail(f"{verdict.claim.id} fails for {verdict.subject}:\n{text}", pytrace=False)

    return _check


def pytest_terminal_summary(terminalreporter, config):
    """The whole verdict table of the run, as the report shows it."""
    state = config.stash.get(_STATE, None)
    if not state or state["run"] is None:
        return
    verdicts = judge_run(state["run"], state["claims"])
    rows = [[v.claim.id, v.subject, v.ours, VERDICT_MARK[v.status].strip("*") + (" (gated)" if v.gated else ""),
             v.noise] for v in verdicts]
    terminalreporter.write_sep("=", f"claims of run {state['run'].id} (profile {state['run'].profile_name})")
    terminalreporter.write_line(table(rows, ["claim", "model", "ours", "verdict", "noise"]))
