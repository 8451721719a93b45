"""Calibration sources: which wikitext-2 test documents a run's perplexity never reads."""

import json

import pytest
from conftest import byte_tokenizer

from laco import LacoError
from laco.calibration import load_calibration, unread_wikitext_documents, wikitext_calibration


def document_lengths(data_dir):
    return [len(json.loads(line)["page"]) for line in (data_dir / "wikitext/wikitext-2-raw-v1_test.jsonl").open()]


def test_unread_documents_follow_the_windows_read(data_dir):
    """Byte tokens: n windows of 512 read at most n * 512 characters from the start of the raw file."""
    lengths = document_lengths(data_dir)
    assert lengths[0] > 8 * 512 and lengths[0] + lengths[1] > 20 * 512 > lengths[0]
    tok = byte_tokenizer()
    assert unread_wikitext_documents(tok, 512, 8, data=data_dir) == 1  # inside document 0
    assert unread_wikitext_documents(tok, 512, 20, data=data_dir) == 2  # into document 1
    assert unread_wikitext_documents(tok, 512, 8, lm_eval_documents=3, data=data_dir) == 3


def test_wikitext_calibration_records_its_documents(data_dir):
    texts, record = wikitext_calibration(2, 4, data_dir)
    assert record["documents"] == [2, 3] and record["sentences"] == len(texts)
    assert not any(t.startswith("=") for t in texts)  # headings left out
    first, _ = wikitext_calibration(2, 3, data_dir)
    assert texts[: len(first)] == first and len(texts) > len(first)


def test_calibration_file_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"page": "fine"}\nnot json\n')
    with pytest.raises(LacoError, match="bad.jsonl:2: not JSON"):
        load_calibration(bad, "page")
    with pytest.raises(LacoError, match="name the field"):
        load_calibration(bad)
    with pytest.raises(LacoError, match="no text field 'text'"):
        load_calibration(bad, "text")
    with pytest.raises(LacoError, match="needs a JSONL"):
        load_calibration(None, "page")
