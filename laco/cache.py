"""Where the project keeps what it computes once and reuses: dequantised GGUF copies
(`laco.loading`) and file digests (`laco.provenance`)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs


def cache_root() -> Path:
    """LACO_CACHE_DIR, else the user cache dir (e.g. ~/.cache/laco-bench)."""
    return Path(os.environ.get("LACO_CACHE_DIR") or platformdirs.user_cache_dir("laco-bench"))
