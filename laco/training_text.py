"""The text a post-training step learns from, kept apart from every text the bench evaluates.

Three sources, each returning the texts and a record (where they came from, how many, SHA-256 of the
text used, and the wikitext documents when there are any):
- wikitext-2 test documents by index (`--train-docs A:B`, or a list `0:4,7`);
- any corpus in a file (`--train-file`): a plain text file is one text, a JSONL file one text per row
  in a named field;
- by default, the wikitext-2 test documents a run's perplexity never reads (`laco.calibration.
  unread_wikitext_documents`), minus the documents the model was calibrated on.

Documents named as evaluated (`--exclude-docs`) are refused when the training documents include one,
and, for a file, when it holds one of their paragraphs. The texts become fixed-length blocks of
token ids (`token_blocks`): each text's tokens, the end-of-sequence token between texts, cut into
`seq_len` pieces, the remainder dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch

from laco import LacoError
from laco.calibration import (
    WIKITEXT_DOCUMENTS,
    read_texts,
    text_record,
    unread_wikitext_documents,
    wikitext_documents,
)

MIN_PARAGRAPH = 50  # characters: shorter lines (headings, "= = Notes = =") say nothing about overlap


@dataclass(frozen=True)
class TrainingText:
    texts: list[str]
    record: dict


def parse_documents(spec: str) -> list[int]:
    """'A:B' (documents A..B-1), 'N', or a comma-separated list of both -> sorted document indices."""
    found: set[int] = set()
    for part in spec.split(","):
        try:
            if ":" in part:
                first, last = (int(x) for x in part.split(":"))
                if first >= last:
                    raise LacoError(f"document range {part} is empty (A:B means documents A..B-1)")
                found.update(range(first, last))
            else:
                found.add(int(part))
        except ValueError:
            raise LacoError(f"documents must be A:B (documents A..B-1), N, or a comma-separated list, got {spec!r}") from None
    return sorted(found)


def spans(documents: list[int]) -> str:
    """[3, 4, 5, 9] -> '3..5, 9'."""
    out, start = [], None
    for i, d in enumerate(documents):
        start = d if start is None else start
        if i + 1 == len(documents) or documents[i + 1] != d + 1:
            out.append(f"{start}..{d}" if d > start else str(d))
            start = None
    return ", ".join(out)


def wikitext_training(documents: list[int], excluded: list[int], data=None) -> TrainingText:
    """The given wikitext-2 test documents, one text each; refused when one of them is evaluated."""
    docs = wikitext_documents(data)
    outside = [d for d in documents if not 0 <= d < len(docs)]
    if outside:
        raise LacoError(f"wikitext-2 test documents {spans(outside)} out of range: there are {len(docs)} (0..{len(docs) - 1})")
    overlap = sorted(set(documents) & set(excluded))
    if overlap:
        raise LacoError(f"training documents {spans(overlap)} are evaluated (--exclude-docs {spans(excluded)}): "
                        "training text must be disjoint from every evaluation")
    if not documents:
        raise LacoError("the training text is empty: no wikitext-2 document is left to train on")
    texts = [docs[d] for d in documents]
    return TrainingText(texts, text_record(texts, f"{WIKITEXT_DOCUMENTS} documents {spans(documents)}",
                                           documents=documents, excluded_documents=excluded))


def file_training(path: str | Path, field: str | None, excluded: list[int], data=None) -> TrainingText:
    """A corpus file: plain text (one text) or JSONL (`field` of every row); refused when it holds a
    paragraph of an evaluated document."""
    texts = read_texts(path, field, "training", split_lines=False)
    if excluded:
        refuse_evaluated_paragraphs(texts, excluded, str(path), data)
    return TrainingText(texts, text_record(texts, str(path) if field is None else f"{path} field {field}",
                                           excluded_documents=excluded))


def refuse_evaluated_paragraphs(texts: list[str], excluded: list[int], where: str, data=None) -> None:
    lines = {line.strip() for text in texts for line in text.splitlines()}
    docs = wikitext_documents(data)
    for d in excluded:
        shared = [p.strip() for p in docs[d].splitlines() if len(p.strip()) >= MIN_PARAGRAPH and p.strip() in lines]
        if shared:
            raise LacoError(f"{where} holds text of evaluated wikitext-2 document {d} ({shared[0][:40]!r}...): "
                            "training text must be disjoint from every evaluation")


def calibration_documents(record: dict) -> list[int]:
    """The wikitext documents a pruned model was calibrated on, as its record names them."""
    calibration = record.get("calibration") or {}
    if calibration.get("documents"):
        return sorted(calibration["documents"])
    match = re.search(r"documents (\d+)\.\.(\d+)", str(calibration.get("file", "")))
    return list(range(int(match.group(1)), int(match.group(2)) + 1)) if match else []


def unread_training(tokenizer, window: int, n_windows: int, lm_eval_documents: int, *, calibrated: list[int],
                    excluded: list[int], data=None) -> TrainingText:
    """The documents a perplexity of `n_windows` windows of `window` tokens (and lm-eval's first
    `lm_eval_documents` documents) never reads, minus the calibration and the excluded documents."""
    first = unread_wikitext_documents(tokenizer, window, n_windows, lm_eval_documents=lm_eval_documents, data=data)
    left = [d for d in range(first, len(wikitext_documents(data))) if d not in set(calibrated) | set(excluded)]
    text = wikitext_training(left, [], data)
    text.record.update(excluded_documents=excluded, calibration_documents=calibrated,
                       unread_from={"document": first, "window": window, "n_windows": n_windows,
                                    "lm_eval_documents": lm_eval_documents})
    return text


def token_blocks(tokenizer, texts: list[str], seq_len: int) -> torch.Tensor:
    """[n_blocks, seq_len] token ids: the texts' tokens joined by the end-of-sequence token."""
    eos = tokenizer.eos_token_id
    ids: list[int] = []
    for text in texts:
        ids.extend(tokenizer(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            ids.append(eos)
    n_blocks = len(ids) // seq_len
    if n_blocks == 0:
        raise LacoError(f"the training text holds {len(ids)} tokens, fewer than one sequence of seq_len={seq_len}")
    return torch.tensor(ids[: n_blocks * seq_len], dtype=torch.long).view(n_blocks, seq_len)
