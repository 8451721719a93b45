"""`laco nightly`: bench the profile into a fresh dated run folder, report it, compare it with a baseline.

The baseline is `--baseline RUN` (or $LACO_BASELINE_RUN), else the newest earlier finished nightly run of
the same profile under `--runs-dir`; the first night has none and only reports. The last `--keep` nightly
runs of the profile are kept, older ones removed (never the baseline). The exit code follows `laco compare`:
1 on a regression; a failed bench exits 1 as well, after the report.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from bench import lock
from laco import LacoError

PREFIX = "nightly-"


def nightly_runs(runs_dir: Path, profile: str) -> list[Path]:
    """Finished nightly runs of a profile, oldest first (their names sort by date)."""
    found = []
    for path in sorted(runs_dir.glob(f"{PREFIX}{profile}-*")):
        try:
            meta = json.loads((path / "run.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if meta.get("finished"):
            found.append(path)
    return found


def main(argv: list[str]) -> int:
    from laco.cli import ArgumentParser, main as laco

    p = ArgumentParser(prog="laco nightly", description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="smollm2-135m")
    p.add_argument("--runs-dir", default="runs", help="where the dated nightly runs live (default: runs)")
    p.add_argument("--reports", default="reports", help="where the report and reports/compare-nightly.md go")
    p.add_argument("--baseline", default=os.environ.get("LACO_BASELINE_RUN"),
                   help="run to compare with (default: $LACO_BASELINE_RUN, else the newest earlier nightly)")
    p.add_argument("--keep", type=int, default=7, help="nightly runs of the profile to keep (default: 7)")
    p.add_argument("--data-dir", help="offline evaluation data (see laco bench)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--no-results-cache", action="store_true", help="measure everything afresh (see laco bench)")
    args = p.parse_args(argv)
    if args.keep < 1:
        raise LacoError(f"--keep must be at least 1, got {args.keep}")
    runs_dir = Path(args.runs_dir)
    if args.baseline and not (Path(args.baseline) / "run.json").is_file():
        raise LacoError(f"baseline is not a run directory (no run.json): {args.baseline}")
    earlier = nightly_runs(runs_dir, args.profile)
    baseline = Path(args.baseline) if args.baseline else (earlier[-1] if earlier else None)
    run = new_run_folder(runs_dir, args.profile)
    with lock.writing(run, "laco nightly"):  # the inner bench and report pass: this process holds it
        bench = ["bench", "--profile", args.profile, "--out", str(run)] + (["--data-dir", args.data_dir] if args.data_dir else [])
        bench_code = laco(bench + (["--quiet"] if args.quiet else []) + (["--no-results-cache"] if args.no_results_cache else []))
        if bench_code == 2:
            if not any(run.glob("results/*/*.json")):  # refused before any result: leave no run folder
                shutil.rmtree(run, ignore_errors=True)
            return 2
        laco(["report", str(run), "--out", args.reports])
    code = bench_code
    if baseline is None:
        print(f"nightly: no earlier nightly run of {args.profile} under {runs_dir}: nothing to compare with yet")
    else:
        code = max(code, laco(["compare", str(baseline), str(run), "--out", str(Path(args.reports) / "compare-nightly.md")]))
    prune_old(runs_dir, args.profile, args.keep, protect=baseline)
    return code


def new_run_folder(runs_dir: Path, profile: str) -> Path:
    """A dated folder this process creates: two nightlies started in one second never share one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    runs_dir.mkdir(parents=True, exist_ok=True)
    for n in range(1, 100):
        run = runs_dir / (f"{PREFIX}{profile}-{stamp}" + (f"-{n}" if n > 1 else ""))
        try:
            run.mkdir()
            return run
        except FileExistsError:
            continue
    raise LacoError(f"no free nightly run folder under {runs_dir} for {stamp}")


def prune_old(runs_dir: Path, profile: str, keep: int, protect: Path | None) -> list[Path]:
    runs = sorted(runs_dir.glob(f"{PREFIX}{profile}-*"))
    doomed = [r for r in runs[:-keep] if protect is None or r.resolve() != protect.resolve()]
    doomed = [r for r in doomed if not lock.busy(r)]  # never a run another process writes or reads
    for r in doomed:
        shutil.rmtree(r, ignore_errors=True)
    return doomed
