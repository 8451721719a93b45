"""Perplexity on wikitext-2 test, in two protocols kept apart (figures differ with the protocol).

1. `windows` — the paper's protocol: the whole test text tokenised once (no BOS), cut into
   non-overlapping windows of `window` tokens; perplexity = exp(mean next-token NLL over every
   predicted token of the first `n_windows` windows). Written here because no library ships
   this fixed-window loop; it is a dozen lines.
2. `lm_eval_wikitext` — lm-eval's `wikitext` task (document-level rolling log-likelihood,
   word perplexity), through the same path as accuracy. Its windows are `lm_eval_max_length`
   tokens, by default the protocol's window: the model's whole context would ask for batch ×
   context × vocabulary logits (`bench.budget`).

The two are parts of one result (`bench.parts`): one that fails leaves the other kept, and a resume
measures only the missing one.
"""

from __future__ import annotations

import math
from importlib import metadata
from pathlib import Path

import torch

from bench.parts import Parts
from bench.subject import Outcome, model_device
from laco.provenance import file_sha256

RAW_FILE = "wikitext/wiki.test.raw"
HUB_SOURCE = "Salesforce/wikitext wikitext-2-raw-v1 test (downloaded)"


def settings(ctx) -> dict:
    p = ctx.profile.perplexity
    raw = Path(ctx.data_dir) / RAW_FILE if ctx.data_dir else None
    out = {
        "dataset": "wikitext-2 test",
        "source": str(raw) if raw else HUB_SOURCE,
        "data": file_sha256(raw) if raw and raw.is_file() else None,
        "window": p.window,
        "n_windows": p.n_windows,
        "batch_size": p.batch_size,
        "bos": False,
        "dtype": ctx.profile.model.dtype,
        "device": model_device(ctx.dense_load_args()),
    }
    if p.lm_eval_wikitext:
        prepared = ctx.tasks()
        out["lm_eval_wikitext"] = {
            "limit": p.lm_eval_limit, "max_length": p.lm_eval_max_length or p.window, "lm_eval": metadata.version("lm_eval"),
            "data": prepared.data.get("wikitext"), "not_available": prepared.not_available.get("wikitext"),
            "batch_size": ctx.profile.accuracy.batch_size, "seed": ctx.profile.seed,
        }
    return out


def measure(subject, settings: dict, ctx) -> Outcome:
    parts = Parts(subject, "perplexity", ctx)
    own = {k: v for k, v in settings.items() if k != "lm_eval_wikitext"}
    # the windows are the text's first N: the cache keeps them apart from N, and a run of more windows serves one of fewer
    family = {k: v for k, v in own.items() if k != "n_windows"}
    values = {"windows": parts.get("windows", own, lambda: windows_part(subject, settings, ctx), lambda v: v["windows"],
                                   family, lambda cached: first_windows(cached, own["n_windows"])),
              "lm_eval_wikitext": None}
    lm = settings.get("lm_eval_wikitext")
    if lm and lm["not_available"]:
        values["lm_eval_wikitext_not_available"] = lm["not_available"]
    elif lm:
        model_side = {**lm, "dtype": settings["dtype"], "device": settings["device"]}
        values["lm_eval_wikitext"] = parts.get("lm_eval_wikitext", model_side,
                                               lambda: lm_eval_wikitext(subject, lm, settings, ctx),
                                               lambda v: v["lm_eval_wikitext"])
    return parts.outcome(values)


def windows_part(subject, settings: dict, ctx) -> dict:
    text = wikitext_test(settings["source"])
    model, tokenizer = subject.model_and_tokenizer()
    windows = window_perplexity(model, tokenizer, text, settings["window"], settings["n_windows"],
                                settings["batch_size"], progress=ctx.progress)
    windows["dataset"] = settings["dataset"]
    return windows


def first_windows(windows: dict, n: int | None) -> dict | None:
    """The figures of the first `n` windows (None: all) out of a result of as many or more, None when it
    has fewer. The same windows, each window's NLL as that run computed it (in its batches)."""
    want = windows["available_windows"] if n is None else min(n, windows["available_windows"])
    if windows["n_windows"] < want:
        return None
    taken = {**windows, **figures(windows["nll"][:want], windows["tokens_per_window"])}
    if want < windows["n_windows"]:
        taken["first_of"] = windows["n_windows"]  # the report says "the first N of M windows"
    return taken


def wikitext_test(source: str) -> str:
    if source != HUB_SOURCE:
        return Path(source).read_text(encoding="utf-8")
    import datasets

    rows = datasets.load_dataset("Salesforce/wikitext", "wikitext-2-raw-v1", split="test")
    return "".join(rows["text"])


@torch.no_grad()
def window_perplexity(model, tokenizer, text: str, window: int, n_windows: int | None,
                      batch_size: int, progress: bool = False) -> dict:
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    available = len(ids) // window
    n = available if n_windows is None else min(n_windows, available)
    if n == 0:
        raise ValueError(f"text of {len(ids)} tokens holds no window of {window}")
    batches = ids[: n * window].view(n, window).split(batch_size)
    device = next(model.parameters()).device
    window_nll: list[float] = []  # summed next-token NLL of each window: the suites pair models by window
    from tqdm.auto import tqdm

    for batch in tqdm(batches, desc="ppl windows", leave=False, disable=not progress):
        batch = batch.to(device)
        logits = model(input_ids=batch).logits.float()
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1), reduction="none"
        ).view(batch.size(0), -1)
        window_nll += losses.double().sum(dim=1).tolist()
    return {"window": window, "available_windows": available, "text_tokens": len(ids), **figures(window_nll, window - 1)}


def figures(window_nll: list[float], tokens_per_window: int) -> dict:
    """Perplexity over the windows whose summed NLLs are given: exp(mean NLL per predicted token)."""
    count = tokens_per_window * len(window_nll)
    return {"ppl": math.exp(sum(window_nll) / count), "n_windows": len(window_nll), "tokens_scored": count,
            "tokens_per_window": tokens_per_window, "nll": window_nll}


def lm_eval_wikitext(subject, lm: dict, settings: dict, ctx) -> dict:
    from bench.accuracy import evaluate

    run = {"backend": "hf", "device": settings["device"], "dtype": settings["dtype"], "max_length": lm["max_length"],
           "batch_size": lm["batch_size"], "seed": lm["seed"], "bootstrap_iters": 0}
    raw = evaluate(subject, {"wikitext": {"limit": lm["limit"], "num_fewshot": 0}}, run, ctx)
    scores = raw["results"]["wikitext"]
    return {
        "word_perplexity": scores.get("word_perplexity,none"),
        "byte_perplexity": scores.get("byte_perplexity,none"),
        "bits_per_byte": scores.get("bits_per_byte,none"),
        "documents": raw["n"].get("wikitext"),
        "max_length": lm["max_length"],
        "task_hash": raw["task_hashes"].get("wikitext"),
    }
