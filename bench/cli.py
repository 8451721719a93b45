"""`laco bench --profile NAME [--out runs/ID] [--data-dir DIR] [--plan]`: plan, then run or resume a profile."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from laco import LacoError
from laco.cli import ArgumentParser


def bench_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="laco bench",
        description="Measure the dense model and every pruning method of a profile (accuracy, perplexity, memory, "
                    "throughput, pruning time) into a run directory; re-running the same command resumes.",
    )
    p.add_argument("--profile", help="a shipped profile name (see --list) or a .toml file")
    p.add_argument("--out", help="run directory (default: runs/<profile>)")
    p.add_argument("--data-dir", help="offline evaluation data (layout of ../shared/data); default: env LACO_DATA_DIR; "
                                      "without one, lm-eval downloads its datasets")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"],
                   help="run in this dtype instead of the profile's [model] dtype (recorded in run.json)")
    p.add_argument("--list", action="store_true", help="list the shipped profiles and exit")
    p.add_argument("--plan", action="store_true",
                   help="print the run's plan (per model and step: peak memory, disk written, FLOPs, estimated time) "
                        "and exit, loading no weights and writing nothing; every run prints it first")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--reuse-results-from-other-code", action="store_true",
                   help="keep results measured by another version of the code (the report marks them); "
                        "by default they are measured again")
    p.add_argument("--wait", action="store_true",
                   help="wait for another process writing the run folder to finish, instead of stopping")
    p.add_argument("--no-results-cache", action="store_true",
                   help="measure everything afresh: neither read nor fill the shared result cache "
                        "(default: $LACO_RESULTS_CACHE, else the user cache dir's results/)")
    return p


def bench_main(argv: list[str]) -> int:
    args = bench_parser().parse_args(argv)
    # OpenMP threads that spin while waiting make a CPU shared with other work tens of times
    # slower (seen here: 0.4 s -> 7.5 s per forward on 2 busy cores); sleeping waiters cost little
    # on an idle machine. Set before torch is imported; recorded in the throughput settings.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from bench import lock
    from bench.dtype import override_dtype
    from bench.profile import load_profile, profile_names, profile_path

    if args.list:
        print("\n".join(profile_names()))
        return 0
    if not args.profile:
        raise LacoError("--profile is required (see --list)")
    out = Path(args.out or Path("runs") / profile_path(args.profile)[0])
    if out.exists() and not out.is_dir():
        raise LacoError(f"run directory exists and is not a folder: {out}")
    if not (args.wait or args.plan):  # a second writer stops before anything slow is imported
        lock.refuse_if_written(out, "laco bench")
    name, profile = load_profile(args.profile)
    override_dtype(profile, args.dtype)
    data_dir = resolve_data_dir(args.data_dir)

    plan_first(profile, out, data_dir, run=not args.plan)
    if args.plan:
        return 0

    from bench.runner import run_profile
    from bench.summary import summary_table

    created = not out.exists()
    with lock.writing(out, "laco bench", wait=args.wait):
        try:
            failures = run_profile(name, profile, out, data_dir=data_dir, progress=not args.quiet,
                                   reuse_other_code=args.reuse_results_from_other_code,
                                   results_cache=not args.no_results_cache)
        except (LacoError, OSError):
            if created and not any(out.glob("results/*/*.json")):  # refused before any result: leave no run folder
                shutil.rmtree(out, ignore_errors=True)
            raise
    print(summary_table(out))
    print(f"run directory: {out}")
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


def plan_first(profile, out: Path, data_dir: str | None, *, run: bool) -> None:
    """Print the run's plan; before a run, refuse a setting that cannot fit in memory, a vLLM tensor-parallel
    size the model's heads cannot be split by, and pruned copies that cannot fit on the run folder's disk,
    before anything loads or is written."""
    from bench.budget import check_budget, check_tensor_parallel
    from bench.dtype import settle_dtype
    from bench.disk import check_disk
    from bench.plan import make_plan

    settle_dtype(profile)  # the plan sizes the dtype the run measures in
    if run:
        check_budget(profile)
        check_tensor_parallel(profile)
    plan = make_plan(profile, out, data_dir)
    print(plan.table(), flush=True)
    if run:
        check_disk(plan, out)


def resolve_data_dir(given: str | None) -> str | None:
    """--data-dir, else LACO_DATA_DIR; with one, the hub is not contacted for datasets."""
    from bench.tasks import DATA_DIR_ENV

    data_dir = given or os.environ.get(DATA_DIR_ENV)
    if not data_dir:
        return None
    path = Path(data_dir).expanduser()
    if not path.is_dir():
        raise LacoError(f"data dir not found: {path}")
    if not os.access(path, os.R_OK | os.X_OK):
        raise LacoError(f"data dir not readable: {path}")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return str(path.resolve())
