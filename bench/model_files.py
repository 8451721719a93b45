"""Where a model's files are before its first load, for the plan (`bench.plan`), which loads nothing:
a prepared local folder, and the tokenizer a synthetic stand-in is built with."""

from __future__ import annotations

from pathlib import Path


def prepared_folder(spec: str, revision: str | None) -> Path | None:
    """The local folder a model loads from when it is already there; None when a load would make or fetch it."""
    from laco.cache import cache_root
    from laco.loading import resolve

    source = resolve(spec, revision)
    if source.kind in ("embedded", "gguf"):
        folder = cache_root() / "gguf" / source.sha256[:16]
    elif source.kind == "synthetic":
        from laco.synthetic import folder_of, parse

        folder = folder_of(parse(spec))
    else:
        folder = Path(source.path) if source.path else None
    return folder if folder is not None and (folder / "config.json").is_file() else None


def stand_in_tokenizer(vocab_size: int):
    """The tokenizer a synthetic stand-in is built with (laco.synthetic), from the embedded model's converted
    folder when it is on this machine; the plan converts nothing."""
    from transformers import AutoTokenizer

    from laco import LacoError
    from laco.synthetic import TOKENIZER_FROM, synthetic_tokenizer

    folder = prepared_folder(TOKENIZER_FROM, None)
    if folder is None:
        raise LacoError(f"the stand-in's tokenizer ({TOKENIZER_FROM}'s) is not converted on this machine yet")
    return synthetic_tokenizer(vocab_size, AutoTokenizer.from_pretrained(folder))
