"""Writing a pruned model: all or nothing.

The folder is written as one `laco.atomic.folder`, so an interrupted or failed save leaves no
half-written output. It holds what stock `AutoModelForCausalLM.from_pretrained` needs (safetensors
weights, config, tokenizer) and `laco.json`, the provenance.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from laco import LacoError, atomic
from laco.faults import kill_point

PROVENANCE_FILE = "laco.json"


def check_output(out_dir: str | Path, force: bool) -> Path:
    """Refuse an existing output unless forced; called before any work is done."""
    out = Path(out_dir)
    if out.exists() and not force:
        raise LacoError(f"output exists: {out} (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise LacoError(f"output exists and is not a folder: {out}")
    ancestor = next(p for p in out.absolute().parents if p.exists())  # where the folder will be created
    if not ancestor.is_dir():
        raise LacoError(f"cannot create the output {out}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise LacoError(f"cannot create the output {out}: {ancestor} is not writable")
    return out


def save_pruned(model, tokenizer, out_dir: str | Path, provenance: dict, *, force: bool = False) -> Path:
    out = check_output(out_dir, force)
    atomic.remove_temporaries_of(out)  # of an earlier save of `out` that was killed
    with atomic.folder(out, if_exists="replace" if force else "error") as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str) + "\n", encoding="utf-8")
        kill_point("save:written")
    return out


def read_provenance(folder: str | Path) -> dict:
    path = Path(folder) / PROVENANCE_FILE
    if not path.is_file():
        raise LacoError(f"no {PROVENANCE_FILE} in {folder}: not a laco output")
    return json.loads(path.read_text(encoding="utf-8"))
