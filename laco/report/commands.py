"""`laco report`, `laco compare` and `laco gate`: thin command lines over runs, judge and render.

Exit codes: 0 fine, 1 a regression (compare) or a failed gated claim (gate), 2 bad input (via
LacoError in laco.cli).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from laco.report.judge import FAIL, NOT_MEASURED, PASS, load_claims, judge_run, suites_dir
from laco.report.render import VERDICT_MARK, table, write_report
from laco.report.runs import load_run


def _claims_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--claims", help="claims file (default: $LACO_CLAIMS or suites/claims.toml)")


def report_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="laco report", description="Write reports/<run-id>.md and its PNG plots.")
    p.add_argument("run", help="run directory written by `laco bench` (runs/ID)")
    p.add_argument("--out", default="reports", help="folder for <run-id>.md and <run-id>/*.png (default: reports)")
    _claims_arg(p)
    args = p.parse_args(argv)
    path = write_report(load_run(args.run), load_claims(args.claims), args.out)
    print(f"report: {path}")
    return 0


def compare_main(argv: list[str]) -> int:
    from laco.report.compare import compare_runs, load_tolerances, regressions, render_compare

    p = argparse.ArgumentParser(prog="laco compare", description="Per-metric deltas of run B against run A; "
                                "exit 1 when B regressed beyond the tolerances.")
    p.add_argument("run_a", help="the reference run (e.g. last night's)")
    p.add_argument("run_b", help="the new run")
    p.add_argument("--tolerances", help="tolerances file (default: suites/tolerances.toml)")
    p.add_argument("--out", help="write the markdown here as well as to stdout")
    p.add_argument("--allow-lost", action="store_true", help="a measurement B lacks is not a regression")
    _claims_arg(p)
    args = p.parse_args(argv)
    a, b = load_run(args.run_a), load_run(args.run_b)
    tolerances = load_tolerances(args.tolerances or suites_dir() / "tolerances.toml")
    deltas = compare_runs(a, b, tolerances, load_claims(args.claims))
    text = render_compare(a, b, deltas, args.allow_lost)
    _emit(text, args.out)
    return 1 if regressions(deltas, args.allow_lost) else 0


def gate_main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="laco gate", description="The release gate: exit 1 when a claim gated for "
                                "the run's profile fails, or is not measured (unless --allow-missing).")
    p.add_argument("run", help="run directory written by `laco bench`")
    p.add_argument("--allow-missing", action="store_true", help="a gated claim that is not measured does not block")
    p.add_argument("--out", help="write the markdown here as well as to stdout")
    _claims_arg(p)
    args = p.parse_args(argv)
    run = load_run(args.run)
    gated = [v for v in judge_run(run, load_claims(args.claims)) if v.gated]
    blocking = {FAIL} if args.allow_missing else {FAIL, NOT_MEASURED}
    failed = [v for v in gated if v.status in blocking]
    unfinished = "" if run.meta.get("finished") else " The run has not finished."
    outcome = "PASS" if gated and not failed else "FAIL"
    lines = [
        f"# laco gate: run `{run.id}` (profile {run.profile_name})",
        "",
        f"**{outcome}**: {sum(v.status == PASS for v in gated)} of {len(gated)} gated verdicts pass"
        f"{'; ' + str(len(failed)) + ' blocking' if failed else ''}.{unfinished}"
        + ("" if gated else " No claim is gated for this profile: nothing vouches for a release."),
        "",
        table([[f"`{v.claim.id}`", v.subject, v.paper, v.ours, VERDICT_MARK[v.status],
                "; ".join(r.note for r in v.rows if r.status != PASS and r.note)] for v in gated],
              ["claim", "model", "paper", "ours", "verdict", "why"]),
    ]
    _emit("\n".join(lines) + "\n", args.out)
    return 0 if outcome == "PASS" else 1


def _emit(text: str, out: str | None) -> None:
    sys.stdout.write(text)
    if out:
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False,
                                         encoding="utf-8") as f:
            f.write(text)
        Path(f.name).replace(path)
