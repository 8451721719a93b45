"""A prune whose model stays on disk: open it streamed, run the method as it is, write the output shard by shard.

The output folder is written through `laco.atomic.folder`: the layers a method creates (merges, sliced
layers) go to a scratch folder inside it and are gone before it is renamed into place, so a killed run
leaves only the temporary folder that the next run removes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from laco import LacoError
from laco.atomic import folder as atomic_folder
from laco.atomic import remove_temporaries_of, write_json
from laco.faults import kill_point
from laco.memory import PeakMemory
from laco.saving import PROVENANCE_FILE, check_output
from laco.stream.model import open_streamed, save_streamed
from laco.stream.plan import MemoryPlan

SCRATCH = "scratch-layers"


def prune_streamed(spec: str, method: str, sentences: list[str], *, out: str | Path, plan: MemoryPlan,
                   force: bool = False, dtype: str = "float32", trust_remote_code: bool = False,
                   **kwargs) -> tuple[dict, Path]:
    """Prune `spec` layer by layer with `method` (its keyword arguments as for `get_pruner(method)`) into
    `out`; returns the record and the folder."""
    from laco.pruners import get_pruner

    if kwargs.get("engine") == "naive" or kwargs.get("compare_engines"):
        raise LacoError("the naive engine copies the whole model per candidate: layer-by-layer pruning uses the cached engine")
    pruner = get_pruner(method)
    out = check_output(out, force)
    remove_temporaries_of(out)  # of an earlier prune of `out` that was killed
    with atomic_folder(out, if_exists="replace" if force else "error") as tmp:
        loaded = open_streamed(spec, dtype=dtype, cache_bytes=plan.cache, scratch=tmp / SCRATCH,
                               trust_remote_code=trust_remote_code)
        outcome = pruner(loaded, sentences, **kwargs)
        with PeakMemory() as writing:
            save_streamed(loaded, outcome.model, tmp)
        record = outcome.record
        store = loaded.store
        record["memory"] = {**plan.as_dict(), "writing_peak_rss_mb": writing.as_dict()["peak_rss_mb"],
                            "layer_reads": store.reads, "cache_hits": store.cache.hits}
        del loaded, outcome, store
        shutil.rmtree(tmp / SCRATCH, ignore_errors=True)
        write_json(tmp / PROVENANCE_FILE, record)
        kill_point("save:written")
    return record, out
