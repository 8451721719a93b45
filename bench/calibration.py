"""The calibration texts of a run (or of one method of it), checked to be disjoint from what the run evaluates.

A profile's `[calibration]` (or a method's own `calibration`) names a file (one text per line, or a
JSONL field), or wikitext-2 test documents by index from the data dir. Documents must lie after every
document the run's perplexity reads (its windows from the start of the raw test file, and lm-eval's
wikitext task with its document limit); otherwise calibration and evaluation would share text.
"""

from __future__ import annotations

from functools import lru_cache

from laco import LacoError


def calibration_texts(settings, data_dir: str | None, profile) -> tuple[list[str], dict]:
    """The texts of `settings` (a bench.profile.CalibrationSettings) and their record; `profile`: the run's."""
    from laco.calibration import load_calibration, wikitext_calibration

    documents = settings.wikitext_documents
    if documents is None:
        return load_calibration(settings.file, settings.field)
    if settings.file:
        raise LacoError("calibration: give either a file or wikitext_documents, not both")
    if data_dir is None:
        raise LacoError("calibration.wikitext_documents needs --data-dir (the documents are read from it)")
    unread = first_unread_document(profile, data_dir)
    if documents == "unread":
        from laco.calibration import wikitext_documents

        documents = [unread, len(wikitext_documents(data_dir))]
    if len(documents) != 2 or documents[0] >= documents[1]:
        raise LacoError(f"calibration.wikitext_documents must be [first, end) with first < end, got {documents}")
    first, last = documents
    if first < unread:
        raise LacoError(f"calibration.wikitext_documents starts at document {first}, but this run's perplexity reads "
                        f"documents up to {unread - 1}: start at {unread} or later so calibration and evaluation "
                        "share no text")
    texts, record = wikitext_calibration(first, last, data_dir)
    unit = settings.unit
    if unit == "sentence":
        texts = [sentence for paragraph in texts for sentence in split_sentences(paragraph)]
    if settings.sample is None:
        return texts, record if unit == "paragraph" else _record(texts, record, unit, None, None)
    return sample_texts(texts, record, settings.sample, settings.seed, unit)


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of a wikitext paragraph: split after . ! ? before a space and a capital letter (the
    corpus's own " @.@ " number marks stay inside sentences); fragments under 4 words are dropped."""
    import re

    parts = re.split(r"(?<=[.!?]) (?=[A-Z\"])", paragraph)
    return [p.strip() for p in parts if len(p.split()) >= 4]


def sample_texts(texts: list[str], record: dict, n: int, seed: int, unit: str = "paragraph") -> tuple[list[str], dict]:
    """A seeded draw of n of the texts, kept in their document order (the paper's random calibration sets)."""
    import random

    if n > len(texts):
        raise LacoError(f"calibration.sample = {n}, but the documents hold {len(texts)} {unit}s")
    chosen = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in chosen], _record([texts[i] for i in chosen], record, unit, n, seed, chosen)


def _record(texts: list[str], record: dict, unit: str, n: int | None, seed: int | None, chosen=None) -> dict:
    from laco.calibration import text_record

    drawn = f", {n} {unit}s drawn with seed {seed}" if n is not None else f", every {unit}"
    return text_record(texts, f"{record['file']}{drawn}", documents=record.get("documents"), unit=unit,
                       **({"drawn": chosen} if chosen is not None else {}))


def read_by_perplexity(profile) -> tuple[int, int, int]:
    """What the run's perplexity reads of wikitext-2 test: (window, windows, lm-eval wikitext documents)."""
    p = profile.perplexity
    n_windows = p.n_windows if p.n_windows is not None else 10**9
    lm_eval_docs = (p.lm_eval_limit or 62) if p.lm_eval_wikitext else 0
    return p.window, n_windows, lm_eval_docs


def first_unread_document(profile, data_dir: str) -> int:
    window, n_windows, lm_eval_docs = read_by_perplexity(profile)
    return _first_unread(profile.model.spec, profile.model.revision, window, n_windows, lm_eval_docs, data_dir)


@lru_cache(maxsize=8)
def _first_unread(spec: str, revision: str | None, window: int, n_windows: int, lm_eval_docs: int, data_dir: str) -> int:
    from laco.calibration import unread_wikitext_documents
    from laco.loading import load_tokenizer

    return unread_wikitext_documents(load_tokenizer(spec, revision=revision), window, n_windows,
                                     lm_eval_documents=lm_eval_docs, data=data_dir)
