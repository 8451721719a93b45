"""`laco report`, `laco compare`, `laco gate` and `laco history`: thin command lines over evidence, verdicts
and reports.

Exit codes: 0 fine, 1 a regression (compare) or a blocking gated claim (gate), 2 bad input (a
LacoError, printed as one line by laco.cli).
"""

from __future__ import annotations

import argparse
import sys

from bench.lock import reading
from laco import atomic
from laco.cli import ArgumentParser
from suites.claims import load_claims
from suites.evidence import load_run


def _claims_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--claims", help="claims file (default: $LACO_CLAIMS or the one shipped with the suites)")


def report_main(argv: list[str]) -> int:
    p = ArgumentParser(prog="laco report", description="Write reports/<run-id>.md and its PNG plots.")
    p.add_argument("run", help="run directory written by `laco bench` (runs/ID)")
    p.add_argument("--out", default="reports", help="folder for <run-id>.md and <run-id>/*.png (default: reports)")
    p.add_argument("--wait", action="store_true", help="wait for a run being written (by laco bench) to be done; "
                   "by default such a run is refused")
    _claims_arg(p)
    args = p.parse_args(argv)
    with reading(args.run, "laco report", wait=args.wait):  # never a run another process is writing
        from suites.report import write_report

        claims = load_claims(args.claims)
        print(f"report: {write_report(load_run(args.run), claims, args.out)}")
    return 0


def compare_main(argv: list[str]) -> int:
    from suites.compare import compare_runs, load_tolerances, regressions, render_compare

    p = ArgumentParser(prog="laco compare", description="Run B against run A, paired wherever they share "
                                "items, windows or rounds; exit 1 when B regressed.")
    p.add_argument("run_a", help="the reference run (e.g. last night's)")
    p.add_argument("run_b", help="the new run")
    p.add_argument("--tolerances", help="tolerances file (default: the one shipped with the suites)")
    p.add_argument("--out", help="write the markdown here as well as to stdout")
    p.add_argument("--allow-lost", action="store_true", help="a measurement B lacks is not a regression")
    _claims_arg(p)
    args = p.parse_args(argv)
    tolerances, claims = load_tolerances(args.tolerances), load_claims(args.claims)  # config first: a typo costs nothing
    a, b = load_run(args.run_a), load_run(args.run_b)
    deltas = compare_runs(a, b, tolerances, claims)
    emit(render_compare(a, b, deltas, args.allow_lost), args.out)
    return 1 if regressions(deltas, args.allow_lost) else 0


def gate_main(argv: list[str]) -> int:
    from suites.gate import render_gate

    p = ArgumentParser(prog="laco gate", description="The release gate: exit 1 unless every claim gated "
                                "for the run's profile passes (INCONCLUSIVE and not measured block too).")
    p.add_argument("run", help="run directory written by `laco bench`")
    p.add_argument("--allow-missing", action="store_true", help="a gated claim that is not measured does not block")
    p.add_argument("--out", help="write the markdown here as well as to stdout")
    _claims_arg(p)
    args = p.parse_args(argv)
    claims = load_claims(args.claims)
    text, passed = render_gate(load_run(args.run), claims, args.allow_missing)
    emit(text, args.out)
    return 0 if passed else 1


def history_main(argv: list[str]) -> int:
    from suites.compare import load_tolerances
    from suites.history import history

    p = ArgumentParser(prog="laco history", description="Each gated figure across runs (a nightly folder, or runs "
                                "named): a markdown table and a PNG per figure, the runs `laco compare` found "
                                "regressed marked.")
    p.add_argument("runs", nargs="+", help="run directories, or folders holding runs (e.g. runs/ of `laco nightly`)")
    p.add_argument("--out", default="reports", help="folder for history-<profile>.md and its PNGs (default: reports)")
    p.add_argument("--profile", help="the profile whose runs to draw (default: the newest run's)")
    p.add_argument("--tolerances", help="tolerances file of the comparison (default: the one shipped with the suites)")
    _claims_arg(p)
    args = p.parse_args(argv)
    tolerances, claims = load_tolerances(args.tolerances), load_claims(args.claims)
    print(f"history: {history(args.runs, claims, tolerances, args.out, args.profile)}")
    return 0


def emit(text: str, out: str | None) -> None:
    sys.stdout.write(text)
    if out:
        atomic.write_text(out, text)
