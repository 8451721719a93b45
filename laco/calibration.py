"""Calibration texts, where they come from, and their tokenisation.

Three sources, each returning the texts and a record of where they came from:
- the project's 10 built-in sentences (`default_sentences`), enough for LaCo's similarity;
- a file (`load_calibration`): one text per non-blank line, or a JSONL file with one text per row
  in a named field;
- wikitext-2 test documents chosen by index (`wikitext_calibration`), for methods that need many
  tokens (SliceGPT). No separate corpus ships offline, so the text must come from documents the
  same run never evaluates: `unread_wikitext_documents` says which ones a windowed perplexity
  leaves alone. The record names the documents and the SHA-256 of the text used.

A method that needs a minimum number of calibration tokens declares it (`laco.pruners.
calibration_tokens_needed`) and checks it with `require_tokens`, which says how many are missing.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path

import torch

from laco import LacoError

DEFAULT_FILE = "laco/data/calibration.txt (default)"
WIKITEXT_DOCUMENTS = "wikitext/wikitext-2-raw-v1_test.jsonl"
WIKITEXT_RAW = "wikitext/wiki.test.raw"
MORE_CALIBRATION = ("supply more with --calibration FILE (one text per line, or JSONL with --calibration-field) "
                    "or --calibration-docs A:B (wikitext-2 test documents A..B-1 the run does not evaluate)")


def default_sentences() -> list[str]:
    """The project's own 10 plain English calibration sentences (laco/data/calibration.txt)."""
    text = resources.files("laco").joinpath("data/calibration.txt").read_text(encoding="utf-8")
    return _lines(text)


def load_sentences(path: str | Path | None, field: str | None = None) -> list[str]:
    """Texts from a file (see `load_calibration`); the default set when `path` is None."""
    return load_calibration(path, field)[0]


def load_calibration(path: str | Path | None, field: str | None = None) -> tuple[list[str], dict]:
    """(texts, record). A `.jsonl` file (or any file with `field` given) holds one JSON object per
    line and the text in `field`; any other file holds one text per non-blank line."""
    if path is None:
        if field is not None:
            raise LacoError("--calibration-field needs a JSONL --calibration file")
        texts = default_sentences()
        return texts, text_record(texts, None)
    texts = read_texts(path, field, "calibration", split_lines=True)
    return texts, text_record(texts, str(path) if field is None else f"{path} field {field}")


def read_texts(path: str | Path, field: str | None, kind: str, *, split_lines: bool) -> list[str]:
    """The non-empty texts of a `kind` ("calibration", "training") file: `field` of each JSONL row, else
    each non-blank line (`split_lines`) or the whole file as one text; one-line errors for what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise LacoError(f"{kind} file not found: {path}")
    if field is None and path.suffix == ".jsonl":
        flag = "--calibration-field" if kind == "calibration" else "--train-field"
        raise LacoError(f"{path} is JSONL: name the field that holds the text with {flag}")
    try:
        if field is not None:
            texts = _jsonl_field(path, field)
        else:
            text = path.read_text(encoding="utf-8")
            texts = _lines(text) if split_lines else [text.strip()]
    except UnicodeDecodeError:
        raise LacoError(f"{kind} file is not UTF-8 text: {path}") from None
    texts = [t for t in texts if t]
    if not texts:
        raise LacoError(f"{kind} file is empty: {path}")
    return texts


def _jsonl_field(path: Path, field: str) -> list[str]:
    texts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LacoError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get(field), str):
            raise LacoError(f"{path}:{number}: no text field {field!r}")
        if row[field].strip():
            texts.append(row[field].strip())
    return texts


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def text_record(texts: list[str], source: str | None, **more) -> dict:
    """Where calibration texts came from (`file`: a path, or a description naming the documents), how
    many, and the SHA-256 of the text used ("\\n"-joined). A pruner given `calibration_file=source`
    records the same three fields (`laco.prune.common_record`)."""
    text = "\n".join(texts)
    return {"file": source or DEFAULT_FILE, "sentences": len(texts), "sha256": hashlib.sha256(text.encode()).hexdigest(),
            **more}


# ---- wikitext-2 test documents ------------------------------------------------------------------

def data_dir(path: str | Path | None = None) -> Path:
    """The evaluation data folder: `path`, else LACO_DATA_DIR, else ../shared/data beside the checkout."""
    return Path(path or os.environ.get("LACO_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def wikitext_documents(data: str | Path | None = None) -> list[str]:
    """The 62 documents of wikitext-2-raw-v1 test, in file order."""
    file = data_dir(data) / WIKITEXT_DOCUMENTS
    if not file.is_file():
        raise LacoError(f"{WIKITEXT_DOCUMENTS} not found under {data_dir(data)} (set LACO_DATA_DIR)")
    docs = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            docs.append(json.loads(line)["page"])
        except (json.JSONDecodeError, KeyError, TypeError):
            raise LacoError(f"{file}:{number}: not a JSON row with a 'page' field") from None
    return docs


def wikitext_calibration(first: int, last: int, data: str | Path | None = None, *,
                         max_texts: int | None = None) -> tuple[list[str], dict]:
    """(texts, record) from wikitext-2 test documents first..last-1: one text per paragraph (a
    non-blank line that is not a ` = heading = ` line), so a batch is many short rows rather than a
    few very long ones; with `max_texts`, only the first paragraphs. The record names the documents
    and the digest of the text used."""
    docs = wikitext_documents(data)
    if not 0 <= first < last <= len(docs):
        raise LacoError(f"wikitext-2 test documents {first}:{last} out of range: there are {len(docs)} (0..{len(docs) - 1})")
    texts = [line for doc in docs[first:last] for line in _lines(doc) if not line.startswith("=")]
    part = "paragraphs"
    if max_texts is not None and max_texts < len(texts):
        texts, part = texts[:max_texts], f"first {max_texts} paragraphs"
    return texts, text_record(texts, f"{WIKITEXT_DOCUMENTS} documents {first}..{last - 1} ({part})",
                              documents=list(range(first, last)))


def parse_document_range(spec: str) -> tuple[int, int]:
    """'A:B' -> (A, B): documents A..B-1."""
    try:
        first, last = (int(x) for x in spec.split(":"))
    except ValueError:
        raise LacoError(f"document range must be A:B (documents A..B-1), got {spec!r}") from None
    return first, last


def unread_wikitext_documents(tokenizer, window: int, n_windows: int, *, lm_eval_documents: int = 0,
                              data: str | Path | None = None) -> int:
    """The first wikitext-2 test document that a run evaluating `n_windows` windows of `window` tokens
    from the start of the raw test file (bench.perplexity) and the first `lm_eval_documents`
    documents (lm-eval's wikitext task with a limit) never reads: calibration drawn from this
    document on is disjoint from that run's evaluation text."""
    raw = (data_dir(data) / WIKITEXT_RAW).read_text(encoding="utf-8")
    covered = n_windows * window
    length = max(4096, 8 * covered)  # tokenise a prefix long enough to hold the windows, not all 1.3 MB
    while True:
        offsets = tokenizer(raw[:length], add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        if len(offsets) > covered or length >= len(raw):
            break
        length *= 2
    end = 0 if not covered else offsets[covered - 1][1] if covered <= len(offsets) else len(raw)  # last character read
    docs = wikitext_documents(data)
    first_unread, position = len(docs), 0
    for index, doc in enumerate(docs):
        start = raw.find(doc[:200].strip(), position)
        if start < 0:
            raise LacoError(f"wikitext document {index} not found in {WIKITEXT_RAW}: the files do not match")
        if start >= end:
            first_unread = index
            break
        position = start
    return max(first_unread, lm_eval_documents)


# ---- tokens -------------------------------------------------------------------------------------

def tokenize(tokenizer, sentences: list[str], device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """One right-padded batch. Right padding keeps every real token's position id and, under a
    causal mask, its hidden state identical to an unpadded run; pads are masked out of the
    similarity."""
    if not sentences:
        raise LacoError("calibration set is empty")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(sentences, return_tensors="pt", padding=True, padding_side="right")
    return {"input_ids": batch["input_ids"].to(device), "attention_mask": batch["attention_mask"].to(device)}


def token_count(batch: dict) -> int:
    """Calibration tokens of a batch: every non-padding position."""
    return int(batch["attention_mask"].sum())


def require_tokens(method: str, batch: dict, needed: int, why: str) -> int:
    """The batch's token count, or a one-line error saying how many are missing and how to add them."""
    have = token_count(batch)
    if have < needed:
        raise LacoError(f"{method} needs at least {needed} calibration tokens ({why}); the calibration set has "
                        f"{have}, {needed - have} missing: {MORE_CALIBRATION}")
    return have
