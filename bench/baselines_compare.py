"""LaCo and every baseline at LaCo's ratio on one model: achieved ratio, perplexity, pruning time.

LaCo runs first (merge mode and hyper-parameters as given; defaults: the notebook's `reference`
merge, C=4 L=1 I=2 T=0.65, H = the model's depth) and reaches some parameter ratio r; every
baseline then prunes a fresh copy of the model to `target_ratio=r`. Perplexity is a quick check
(the protocol of bench.perplexity): non-overlapping windows of `window`
tokens from the start of WikiText-2's raw test file (tokenized without special tokens), every
token after the first of a window scored, PPL = exp(total NLL / tokens scored).

    laco baselines-compare --model smollm2-135m --windows 16
"""

from __future__ import annotations

import argparse
import gc
import json
import os
from pathlib import Path

from bench import perplexity
from laco import LacoError, atomic

BASELINES = ("drop", "rule-merge", "shortgpt", "come", "llm-pruner", "slicegpt")
WIKITEXT = perplexity.RAW_FILE


def data_dir(path: str | Path | None = None) -> Path:
    """The evaluation data folder: `path`, else LACO_DATA_DIR, else ../shared/data beside the checkout."""
    folder = Path(path or os.environ.get("LACO_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (folder / WIKITEXT).is_file():
        raise LacoError(f"{WIKITEXT} not found under {folder} (set LACO_DATA_DIR)")
    return folder


def wikitext_test(path: str | Path | None = None) -> str:
    return (data_dir(path) / WIKITEXT).read_text(encoding="utf-8")


def window_perplexity(model, tokenizer, text: str, *, window: int = 512, n_windows: int = 16) -> dict:
    """The bench's windowed perplexity (bench.perplexity), on the first `n_windows` windows."""
    result = perplexity.window_perplexity(model, tokenizer, text, window, n_windows, batch_size=4)
    if result["n_windows"] < n_windows:
        raise LacoError(f"text too short for {n_windows} windows of {window} tokens")
    return {**result, "text": f"{WIKITEXT} from its start, no special tokens"}


def summary(method: str, record: dict, ppl: dict) -> dict:
    row = {"method": method, "target_ratio": (record.get("target") or {}).get("ratio"),
           "pruning_ratio": record.get("parameters", {}).get("pruning_ratio", 0.0),
           "ppl": ppl["ppl"], "prune_seconds": record.get("prune_seconds")}
    if "n_layers_after" in record:
        row["shape"] = f"{record['n_layers_after']} layers"
    elif "sliced_width" in record:
        row["shape"] = f"width {record['sliced_width']} of {record['hidden_size']}"
    elif "removed_per_layer" in record:
        r = record["removed_per_layer"]
        layers = record["config"]["layer_range"]
        row["shape"] = f"-{r['kv_groups']} KV groups, -{r['mlp_channels']} MLP channels in layers {layers}"
    return row


def calibration_for(method: str, loaded, ratio: float | None, sentences: list[str], *, window: int, n_windows: int,
                    data: str | Path | None) -> tuple[list[str], str | None]:
    """The given sentences, or, for a method that needs more tokens than they hold (SliceGPT), the first
    paragraphs of wikitext-2 test from the first document the perplexity windows never read, as many
    as it needs."""
    from laco.calibration import unread_wikitext_documents, wikitext_calibration, wikitext_documents
    from laco.pruners import calibration_tokens_needed

    need = calibration_tokens_needed(method, loaded, target_ratio=ratio)
    lengths = lambda texts: [len(ids) for ids in loaded.tokenizer(texts)["input_ids"]]  # noqa: E731
    if need <= sum(lengths(sentences)):
        return sentences, None
    first = unread_wikitext_documents(loaded.tokenizer, window, n_windows, data=data)
    docs = len(wikitext_documents(data))
    texts, _ = wikitext_calibration(first, docs, data)
    total = 0
    for count, length in enumerate(lengths(texts), 1):
        total += length
        if total >= need:
            break
    else:
        raise LacoError(f"{method} needs {need} calibration tokens; wikitext-2 documents {first}.. hold {total}")
    last = next(i for i in range(first + 1, docs + 1) if len(wikitext_calibration(first, i, data)[0]) >= count)
    texts, record = wikitext_calibration(first, last, data, max_texts=count)
    return texts, record["file"]


def compare_at_laco_ratio(model: str = "smollm2-135m", *, methods=BASELINES, sentences: list[str] | None = None,
                          laco_params: dict | None = None, window: int = 512, n_windows: int = 16,
                          data: str | Path | None = None, progress: bool = False,
                          out: str | Path | None = None) -> list[dict]:
    """Rows (dense, laco, then each method at LaCo's ratio) with ratio, PPL, pruning time, shape. With
    `out`, every pruned model is also saved as OUT/<method> (the folder `laco prune` writes)."""
    from laco.calibration import default_sentences
    from laco.loading import load_model
    from laco.pruners import get_pruner
    from laco.saving import check_output, save_pruned

    for method in methods:
        get_pruner(method)  # an unknown name fails before any work
    if out is not None:
        for method in ("laco", *methods):
            check_output(Path(out) / method, force=False)
    sentences = sentences or default_sentences()
    laco_params = {"merge": "reference", **(laco_params or {})}
    text = wikitext_test(data)
    loaded = load_model(model)
    rows = [summary("dense", {}, window_perplexity(loaded.model, loaded.tokenizer, text, window=window, n_windows=n_windows))]
    runs = [("laco", laco_params)] + [(m, {"merge": laco_params["merge"]} if m == "rule-merge" else {}) for m in methods]
    ratio = None
    for method, params in runs:
        del loaded
        gc.collect()
        loaded = load_model(model)
        texts, calibration_file = calibration_for(method, loaded, ratio, sentences, window=window, n_windows=n_windows,
                                                  data=data)
        result = get_pruner(method)(loaded, texts, target_ratio=ratio, progress=progress,
                                    calibration_file=calibration_file, **params)
        ppl = window_perplexity(result.model, loaded.tokenizer, text, window=window, n_windows=n_windows)
        rows.append({**summary(method, result.record, ppl), "fingerprint": result.record["fingerprint"],
                     "calibration": result.record["calibration"]["file"]})
        if out is not None:
            rows[-1]["folder"] = str(save_pruned(result.model, loaded.tokenizer, Path(out) / method, result.record))
        if method == "laco":
            ratio = result.record["parameters"]["pruning_ratio"]
            if ratio <= 0:
                raise LacoError(f"LaCo removed nothing with {laco_params}: there is no ratio to match")
    return rows


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="laco baselines-compare", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--methods", nargs="+", default=list(BASELINES), help=f"default: {' '.join(BASELINES)}")
    p.add_argument("--windows", type=int, default=16, help="number of windows for the perplexity (default 16)")
    p.add_argument("--window", type=int, default=512, help="tokens per window (default 512)")
    p.add_argument("--data", help="evaluation data folder (default: LACO_DATA_DIR or ../shared/data)")
    p.add_argument("--json", help="also write the rows to this JSON file")
    p.add_argument("--out", help="keep every pruned model as OUT/<method> (safetensors, config, tokenizer, laco.json)")
    args = p.parse_args(argv)
    from tabulate import tabulate

    rows = compare_at_laco_ratio(args.model, methods=args.methods, window=args.window, n_windows=args.windows,
                                 data=args.data, out=args.out)
    print(tabulate(rows, headers="keys", floatfmt=".4g"))
    if args.json:
        atomic.write_text(args.json, json.dumps(rows, indent=2) + "\n")
    return 0
