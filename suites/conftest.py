"""The claims suite: `pytest suites --run runs/ID` judges a finished (or partial) bench run.

One test (test_claims.py) is parametrised from the claims files (one per paper, suites/claims/): one
case per claim and model of the run that the claim judges (id `CLAIM-MODEL`, so `-k CLAIM` selects a
claim), then one per acceptance criterion of the run's profile and model (id `profile:CRITERION-MODEL`).
The judging is `suites.verdicts`, the same code the report and `laco gate` use; each case prints the
claim's rows (with each row's p-value and Holm level) and asserts once:
  PASS -> passed;  FAIL -> failed;  INCONCLUSIVE -> failed with the interval and the items that would
  decide (an undecided claim is not a pass);  equal (within margin) -> failed (a tie is not a pass);
  not measured / not at the claim's conditions -> skipped with the reason (never passed).
A claim that does not apply to the run's profile, whose paper's file the run did not measure (no model
of its subjects), about post-training on a run that post-trained nothing, or whose role has no model in
the run, is one skipped case. Without --run every claim
is one skipped case with a message saying how to give a run.
"""

from __future__ import annotations

import pytest

from laco import LacoError
from suites.claims import Claim, Claims, load_claims
from suites.evidence import load_run
from suites.markdown import VERDICT_MARK, table
from suites.outcomes import EQUAL, FAIL, INCONCLUSIVE, PASS
from suites.verdicts import Judge

_STATE = pytest.StashKey[dict]()
ACCEPTANCE = "profile"  # the id the profile's own acceptance criteria go by when there is none to judge
NO_RUN = "no run given: judge one with `pytest suites --run runs/ID` (written by `laco bench`)"


def pytest_addoption(parser):
    group = parser.getgroup("laco claims")
    group.addoption("--run", help="run directory written by `laco bench` (runs/ID) to judge")
    group.addoption("--claims", help="a claims file or folder of them (default: the suites' own, one per paper)")


def pytest_configure(config):
    state = {"judge": None, "claims": None}
    try:
        state["claims"] = load_claims(config.getoption("--claims", default=None))
        if config.getoption("--run", default=None):
            state["judge"] = Judge(load_run(config.getoption("--run")), state["claims"])
    except LacoError as exc:
        raise pytest.UsageError(str(exc)) from None
    config.stash[_STATE] = state


def _skip(why: str, name: str):
    return [pytest.param(None, marks=pytest.mark.skip(reason=why), id=name)]


def _cases(judge: Judge, claim: Claim) -> list:
    """(claim, model) for every model of the run the claim judges."""
    return [pytest.param((claim, k), id=f"{claim.id}-{k}") for k in judge.subjects(claim)]


def claim_cases(claims: Claims, judge: Judge | None) -> list:
    """The cases of the claims file in its order, then the profile's acceptance criteria."""
    if judge is None:
        return [case for c in claims.claims for case in _skip(NO_RUN, f"{c.id}-no-run")] + _skip(NO_RUN, f"{ACCEPTANCE}-no-run")
    run, cases = judge.run, []
    for claim in claims.claims:
        if not claim.applies_to(run.profile_name):
            cases += _skip(f"claim {claim.id} does not apply to profile {run.profile_name}", f"{claim.id}-n/a")
        elif claim.stage != "pruned" and not run.post_trained:
            cases += _skip(f"run {run.id} post-trained no model: claim {claim.id} is about post-training", f"{claim.id}-n/a")
        elif not claims.measured(run, claim):
            paper = claims.paper_of(claim)
            cases += _skip(f"run {run.id} measured none of the methods {paper.name}'s claims are about", f"{claim.id}-n/a")
        else:
            cases += _cases(judge, claim) or _skip(f"not measured: run {run.id} has no {claim.subject} model",
                                                   f"{claim.id}-none")
    acceptance = [case for c in claims.for_run(run) if c.id.startswith("profile:") for case in _cases(judge, c)]
    return cases + (acceptance or _skip(f"profile {run.profile_name} declares no acceptance criteria", f"{ACCEPTANCE}-none"))


def pytest_generate_tests(metafunc):
    if "subject" in metafunc.fixturenames:
        state = metafunc.config.stash[_STATE]
        metafunc.parametrize("subject", claim_cases(state["claims"], state["judge"]))


@pytest.fixture
def verdict(request, subject):
    judge = request.config.stash[_STATE]["judge"]
    return judge.judge(*subject)


@pytest.fixture
def check():
    """Print the claim's rows, then assert once."""

    def _check(verdict):
        rows = [[r.other or "", r.ours, r.status, _test_of(r), "; ".join([r.note, *r.flags])] for r in verdict.rows]
        text = table(rows, ["vs", "ours [95%]", "verdict", "p / Holm level", "note"])
        left_out = "".join(f"\nleft out: {why}" for why in verdict.left_out)
        print(f"\n{verdict.claim.statement} ({verdict.claim.source})\npaper: {verdict.paper}{left_out}\n{text}")
        if verdict.status == PASS:
            return
        if verdict.status in (FAIL, INCONCLUSIVE, EQUAL):  # the one assertion: undecided or tied is not a pass
            pytest.fail(f"{verdict.claim.id} is {verdict.status} for {verdict.subject}:\n{text}", pytrace=False)
        notes = dict.fromkeys(r.note for r in verdict.rows if r.status != PASS and r.note)
        pytest.skip(f"{verdict.status}: " + "; ".join(notes))

    return _check


def _test_of(row) -> str:
    if row.p_value is None:
        return ""
    level = f" / {row.adjusted_level:.3g}" if row.adjusted_level is not None else ""
    coverage = f"; interval covers {row.coverage:.0%}" if row.coverage is not None else ""
    return f"{row.p_value:.3g}{level}{coverage}"


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
