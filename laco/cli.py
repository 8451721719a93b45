"""The `laco` command. Sub-commands are registered lazily as "module:function" so that the
pruning core never imports the bench or the suites, and `laco prune` starts without loading lm-eval."""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import sys

from laco import LacoError

COMMANDS: dict[str, tuple[str, str]] = {
    "prune": ("laco.cli:prune_main", "prune a model (LaCo or a baseline, --method) and save it with provenance"),
    "post-train": ("laco.posttrain:post_train_main", "train a pruned model further (continue, lora, distill) and save it"),
    "report": ("suites.commands:report_main", "write reports/<run-id>.md (+ PNG plots) from a bench run"),
    "compare": ("suites.commands:compare_main", "run B vs run A, paired; exit 1 on a regression"),
    "gate": ("suites.commands:gate_main", "release gate of a run; exit 1 unless every gated claim passes"),
    "history": ("suites.commands:history_main", "each gated figure across runs (markdown + PNGs), regressions marked"),
    "baselines-compare": ("bench.baselines_compare:main", "LaCo and every baseline at LaCo's ratio: ratio, PPL, time"),
    "bench": ("bench.cli:bench_main", "measure dense and pruned models of a profile into a resumable run directory"),
    "nightly": ("bench.nightly:main", "bench into a fresh dated run, report it, compare with the last one"),
}

# The base install judges runs (report, compare, gate); pruning and measuring need an extra, told
# apart by the modules it brings (pyproject.toml's optional dependencies).
PRUNE_MODULES = ("torch", "transformers", "safetensors", "accelerate", "peft", "gguf", "tqdm", "platformdirs")
EXTRAS: dict[str, tuple[str, ...]] = {"prune": PRUNE_MODULES, "bench": (*PRUNE_MODULES, "lm_eval", "yaml")}
NEEDS_EXTRA = {"prune": "prune", "post-train": "prune", "baselines-compare": "bench", "bench": "bench", "nightly": "bench"}


def missing_extra(command: str) -> str | None:
    """The extra the command needs and this install lacks (None: it has what the command needs)."""
    extra = NEEDS_EXTRA.get(command)
    if extra is None:
        return None
    for module in EXTRAS[extra]:
        try:
            if importlib.util.find_spec(module) is None:
                return extra
        except (ImportError, ValueError):  # a module that cannot be found is as good as absent
            return extra
    return None


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
    extra = missing_extra(name)
    if extra:
        print(f"laco {name} needs the {extra!r} extra: pip install 'laco-bench[{extra}]'", file=sys.stderr)
        return 2
    module, func = COMMANDS[name][0].split(":")
    try:
        return getattr(importlib.import_module(module), func)(rest) or 0
    except LacoError as exc:
        print(f"laco {name}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file that cannot be read or written (full disk, permissions): one line too
        print(f"laco {name}: error: {describe_os_error(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"laco {name}: interrupted; nothing is left half-written (finished results are kept)", file=sys.stderr)
        return 130


def describe_os_error(exc: OSError) -> str:
    """'No space left on device: /path' rather than "[Errno 28] No space left on device: '/path'"."""
    if exc.strerror:
        return exc.strerror + (f": {exc.filename}" if exc.filename else "")
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose usage errors are one line (LacoError, exit code 2) instead of the usage text."""

    def error(self, message: str):
        raise LacoError(f"{message} (see {self.prog} --help)")


LACO_FLAGS = ("merge", "paper_setting", "C", "L", "H", "I", "T", "engine", "compare_engines")  # LaCo's own options


def prune_parser() -> argparse.ArgumentParser:
    from laco.merge import MERGE_MODES

    p = ArgumentParser(prog="laco prune", description="Prune a causal LM (LaCo or a baseline) and save it "
                       "with provenance.")
    p.add_argument("model", nargs="?", help="hub id, model folder, .gguf file, or smollm2-135m (embedded)")
    p.add_argument("--out", help="output folder (written atomically)")
    p.add_argument("--force", action="store_true", help="replace an existing output folder")
    p.add_argument("--method", default="laco", help="pruning method (default laco); see --list-methods")
    p.add_argument("--list-methods", action="store_true", help="print every method with one line and exit")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a parameter of the method (repeatable); values read as int, float, true/false, else text")
    p.add_argument("--merge", choices=list(MERGE_MODES),
                   help="laco, rule-merge: paper (Eq. 1 literally, default), reference (the authors' notebook), drop")
    p.add_argument("--paper-setting", help="laco, drop: start from a row of the paper's Table 8 (llama2-7b, llama2-13b, "
                   "baichuan2-7b); H is scaled to the model's depth; -C/-L/-H/-I/-T override it")
    p.add_argument("-C", type=int, help="layers per merge (base + C-1 above it); default 4")
    p.add_argument("-L", type=int, help="lowest merge base, 0-based inclusive; default 1")
    p.add_argument("-H", type=int, help="exclusive upper bound: the pointer starts at H-C; default: layer count")
    p.add_argument("-I", type=int, help="pointer step after an accepted merge; default 2")
    p.add_argument("-T", type=float, help="similarity threshold in (0, 1]; default 0.65")
    target = p.add_mutually_exclusive_group()
    target.add_argument("--target-layers", type=int, help="keep at most N layers (width methods: N layers' parameters)")
    target.add_argument("--target-ratio", type=float, help="remove about this fraction of the parameters")
    p.add_argument("--calibration", help="calibration texts: a text file, one per line, or a .jsonl file "
                   "(with --calibration-field); default: 10 built-in sentences")
    p.add_argument("--calibration-field", help="the JSONL field that holds the text, e.g. page")
    p.add_argument("--calibration-docs", metavar="A:B", help="calibration from wikitext-2 test documents A..B-1 "
                   "(of 62, under LACO_DATA_DIR or ../shared/data), one text per paragraph")
    p.add_argument("--engine", choices=["cached", "naive"], help="laco, drop: similarity engine (same decisions)")
    p.add_argument("--compare-engines", action="store_true", default=None,
                   help="laco, drop: also run the naive engine and record both times")
    p.add_argument("--dtype", default="float32", help="float32 (default), float16, bfloat16, auto")
    p.add_argument("--device", default="cpu")
    p.add_argument("--device-map", help="accelerate device_map, e.g. auto, for models larger than one GPU")
    p.add_argument("--trust-remote-code", action="store_true", help="allow models that ship their own code")
    p.add_argument("--max-memory", metavar="SIZE", help="bound on the memory the prune may hold, e.g. 6GB (default: what "
                   "the machine has available); a prune that does not fit with the whole model resident runs layer by layer")
    p.add_argument("--stream", action="store_true", help="prune layer by layer: decoder layers are read from the "
                   "safetensors shards when needed and the output is written shard by shard")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def parse_param(text: str) -> tuple[str, object]:
    """KEY=VALUE, the value typed: int, float, true/false, none, else the text itself."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise LacoError(f"--param takes KEY=VALUE, got {text!r}")
    lowered = value.strip().lower()
    if lowered in ("true", "false"):
        return key.strip(), lowered == "true"
    if lowered in ("none", "null"):
        return key.strip(), None
    for kind in (int, float):
        try:
            return key.strip(), kind(value)
        except ValueError:
            pass
    return key.strip(), value


def parse_params(items: list[str]) -> dict[str, object]:
    """Every --param KEY=VALUE, typed; a key given twice is refused."""
    params: dict[str, object] = {}
    for text in items:
        key, value = parse_param(text)
        if key in params:
            raise LacoError(f"--param {key} given twice")
        params[key] = value
    return params


def method_params(args) -> dict:
    """The method's parameters from --param and LaCo's own flags; a key given twice is refused."""
    params = parse_params(args.param)
    for key in LACO_FLAGS:
        value = getattr(args, key)
        if value is not None:
            if key in params:
                raise LacoError(f"{key} given both as a flag and as --param")
            params[key] = value
    return params


def calibration_texts(args) -> tuple[list[str], str | None]:
    """(texts, calibration_file as the record names it)."""
    from laco.calibration import load_calibration, parse_document_range, wikitext_calibration

    if args.calibration_docs:
        if args.calibration or args.calibration_field:
            raise LacoError("give --calibration-docs or --calibration, not both")
        texts, record = wikitext_calibration(*parse_document_range(args.calibration_docs))
        return texts, record["file"]
    texts, record = load_calibration(args.calibration, args.calibration_field)
    return texts, None if args.calibration is None else record["file"]


def list_methods() -> str:
    """Every method, shipped or a plugin's, with its line and its parameters."""
    from laco.pruners import plugin_package, pruner_parameters, registry, summary

    lines = []
    for name in registry():
        params = ", ".join(f"{k}={v}" for k, v in pruner_parameters(name).items())
        package = plugin_package(name)
        lines.append(f"{name:<11} {summary(name)}" + (f" [plugin of {package}]" if package else "")
                     + (f"\n{'':<11}   params: {params}" if params else ""))
    return "\n".join(lines)


def describe_result(record: dict) -> str:
    """One line: the shape after pruning, the ratio, the time."""
    if "n_layers_after" in record:
        shape = f"{record['n_layers_before']} -> {record['n_layers_after']} layers"
    elif "sliced_width" in record:
        shape = f"hidden width {record['hidden_size']} -> {record['sliced_width']}"
    elif "removed_per_layer" in record:
        r = record["removed_per_layer"]
        shape = f"-{r['kv_groups']} KV groups, -{r['mlp_channels']} MLP channels in layers {record['config']['layer_range']}"
    else:
        shape = "pruned"
    extra = ""
    if record["method"] in ("laco", "drop"):
        extra = f", merge={record['config']['merge']}, T={record['config']['T']:.4g}"
    return (f"{record['method']}: {shape}, {record['parameters']['pruning_ratio']:.1%} of parameters removed{extra}, "
            f"{record['prune_seconds']:.1f}s, reload with {record['loader']}")


def prune_main(argv: list[str]) -> int:
    args = prune_parser().parse_args(argv)
    if args.list_methods:
        print(list_methods())
        return 0
    from laco.collapse import make_config
    from laco.pruners import check_parameters, get_pruner
    from laco.saving import check_output, save_pruned
    from laco.targets import parse_target

    if not args.model or not args.out:
        raise LacoError("give a MODEL and --out DIR (or --list-methods)")
    pruner = get_pruner(args.method)
    params = method_params(args)
    check_parameters(args.method, params)
    parse_target(args.target_ratio, args.target_layers, required=False)  # before the model is loaded
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    check_output(args.out, args.force)
    sentences, calibration_file = calibration_texts(args)
    if args.method in ("laco", "drop"):  # LaCo's settings are checked before the model is loaded
        hyper = {k: params[k] for k in "CLHIT" if k in params}
        make_config(merge=params.get("merge", "paper"), paper_setting_name=params.get("paper_setting"), **hyper).validate()
    from laco.loading import load_model
    from laco.stream.plan import plan_for_command

    plan = plan_for_command(args, params, sentences)  # what does not fit is refused here, before loading
    common = dict(target_ratio=args.target_ratio, target_layers=args.target_layers, calibration_file=calibration_file,
                  seed=args.seed, progress=not args.quiet, **params)
    if plan is not None and plan.stream:
        from laco.stream.prune import prune_streamed

        record, out = prune_streamed(args.model, args.method, sentences, out=args.out, plan=plan, force=args.force,
                                     dtype=args.dtype, trust_remote_code=args.trust_remote_code, **common)
    else:
        loaded = load_model(args.model, dtype=args.dtype, device=args.device,
                            trust_remote_code=args.trust_remote_code, device_map=args.device_map)
        outcome = pruner(loaded, sentences, **common)
        record = outcome.record
        record["memory"] = plan.as_dict() if plan is not None else None
        out = save_pruned(outcome.model, loaded.tokenizer, args.out, record, force=args.force)
    print(f"{record['source']['model_id']}: {describe_result(record)} -> {out}")
    if record.get("engine_comparison"):
        c = record["engine_comparison"]
        print(f"engines: naive {c['naive_seconds']:.1f}s, cached {c['cached_seconds']:.1f}s, "
              f"speed-up {c['speedup']:.2f}x, same decisions: {c['same_decisions']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
