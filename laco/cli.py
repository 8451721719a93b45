"""The `laco` command. Sub-commands are registered lazily as "module:function" so that the
pruning core never imports the bench or the suites, and `laco prune` starts without loading lm-eval."""

from __future__ import annotations

import argparse
import difflib
import importlib
import sys

from laco import LacoError

COMMANDS: dict[str, tuple[str, str]] = {
    "prune": ("laco.cli:prune_main", "prune a model by Layer Collapse and save it with provenance"),
    "report": ("suites.commands:report_main", "write reports/<run-id>.md (+ PNG plots) from a bench run"),
    "compare": ("suites.commands:compare_main", "run B vs run A, paired; exit 1 on a regression"),
    "gate": ("suites.commands:gate_main", "release gate of a run; exit 1 unless every gated claim passes"),
    "baselines-compare": ("bench.baselines_compare:main", "LaCo and every baseline at LaCo's ratio: ratio, PPL, time"),
    "bench": ("bench.cli:bench_main", "measure dense and pruned models of a profile into a resumable run directory"),
    "nightly": ("bench.nightly:main", "bench into a fresh dated run, report it, compare with the last one"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: laco COMMAND [options]\n\ncommands:")
        for name, (_, text) in COMMANDS.items():
            print(f"  {name:<10} {text}")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"laco: error: unknown command {name!r}{hint}", file=sys.stderr)
        return 2
    module, func = COMMANDS[name][0].split(":")
    try:
        return getattr(importlib.import_module(module), func)(rest) or 0
    except LacoError as exc:
        print(f"laco {name}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"laco {name}: interrupted; nothing was written", file=sys.stderr)
        return 130


def prune_parser() -> argparse.ArgumentParser:
    from laco.merge import MERGE_MODES

    p = argparse.ArgumentParser(prog="laco prune", description="Prune a causal LM by Layer Collapse (LaCo).")
    p.add_argument("model", help="hub id, model folder, .gguf file, or smollm2-135m (embedded)")
    p.add_argument("--out", required=True, help="output folder (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--merge", default="paper", choices=list(MERGE_MODES),
                   help="paper: Eq. 1 literally; reference: the authors' notebook; drop: delete layers")
    p.add_argument("--paper-setting", help="start from a row of the paper's Table 8 (llama2-7b, llama2-13b, "
                   "baichuan2-7b); H is scaled to the model's depth; -C/-L/-H/-I/-T override it")
    p.add_argument("-C", type=int, help="layers per merge (base + C-1 above it); default 4")
    p.add_argument("-L", type=int, help="lowest merge base, 0-based inclusive; default 1")
    p.add_argument("-H", type=int, help="exclusive upper bound: the pointer starts at H-C; default: layer count")
    p.add_argument("-I", type=int, help="pointer step after an accepted merge; default 2")
    p.add_argument("-T", type=float, help="similarity threshold in (0, 1]; default 0.65")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-layers", type=int, help="search T so that at most N layers remain")
    target.add_argument("--target-ratio", type=float, help="search T to remove about this fraction of parameters")
    p.add_argument("--calibration", help="text file, one calibration sentence per line (default: 10 built-in)")
    p.add_argument("--engine", default="cached", choices=["cached", "naive"], help="similarity engine (same decisions)")
    p.add_argument("--compare-engines", action="store_true", help="also run the naive engine and record both times")
    p.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16, auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--device-map", help="accelerate device_map, e.g. auto, for models larger than one GPU")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def prune_main(argv: list[str]) -> int:
    args = prune_parser().parse_args(argv)
    from laco.calibration import load_sentences
    from laco.collapse import make_config
    from laco.loading import load_model
    from laco.pruners import laco_pruner
    from laco.saving import check_output, save_pruned

    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    hyper = {k: getattr(args, k) for k in "CLHIT" if getattr(args, k) is not None}
    check_output(args.out, args.force)
    sentences = load_sentences(args.calibration)
    make_config(merge=args.merge, paper_setting_name=args.paper_setting, **hyper).validate()  # before loading
    loaded = load_model(args.model, dtype=args.dtype, device=args.device,
                        trust_remote_code=args.trust_remote_code, device_map=args.device_map)
    record = laco_pruner(
        loaded, sentences, target_ratio=args.target_ratio, target_layers=args.target_layers, merge=args.merge,
        paper_setting=args.paper_setting, calibration_file=args.calibration, engine=args.engine,
        compare_engines=args.compare_engines, seed=args.seed, progress=not args.quiet, **hyper,
    ).record
    out = save_pruned(loaded.model, loaded.tokenizer, args.out, record, force=args.force)
    config = record["config"]
    print(f"{loaded.source.model_id}: {record['n_layers_before']} -> {record['n_layers_after']} layers, "
          f"{record['parameters']['pruning_ratio']:.1%} of parameters removed, merge={config['merge']}, "
          f"T={config['T']:.4g}, search {record['search_seconds']:.1f}s -> {out}")
    if record["engine_comparison"]:
        c = record["engine_comparison"]
        print(f"engines: naive {c['naive_seconds']:.1f}s, cached {c['cached_seconds']:.1f}s, "
              f"speed-up {c['speedup']:.2f}x, same decisions: {c['same_decisions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
