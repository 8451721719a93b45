"""Calibration sentences and their tokenisation."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from laco import LacoError


def default_sentences() -> list[str]:
    """The project's own 10 plain English calibration sentences (laco/data/calibration.txt)."""
    text = resources.files("laco").joinpath("data/calibration.txt").read_text(encoding="utf-8")
    return _lines(text)


def load_sentences(path: str | Path | None) -> list[str]:
    """Sentences from a file, one per non-blank line; the default set when `path` is None."""
    if path is None:
        return default_sentences()
    path = Path(path)
    if not path.is_file():
        raise LacoError(f"calibration file not found: {path}")
    sentences = _lines(path.read_text(encoding="utf-8"))
    if not sentences:
        raise LacoError(f"calibration file is empty: {path}")
    return sentences


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


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
