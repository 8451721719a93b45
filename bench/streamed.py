"""Prunes under a profile's `[model] max_memory`, decided and run as `laco prune --max-memory` does.

`laco.stream.plan.plan_memory` decides before anything loads: resident when the method's resident
figure fits the bound, layer by layer from the model's files when it does not and the method can
stream, else a one-line refusal naming the figure and the bound. A streamed prune writes its output
shard by shard (`laco.stream.prune.prune_streamed`); the pruning-time phase prunes again the same way
without writing. The measurements still load whole models: the bound is a prune's.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from laco.stream.plan import MemoryPlan


def memory_plan(method_name: str, kwargs: dict, ctx, sentences: list[str], folder: str | None = None) -> MemoryPlan | None:
    """How the prune of the dense model (or of the earlier entry saved in `folder`) runs under the profile's
    bound; None without a bound (the bench's resident prune, as before)."""
    from laco.memory import parse_size
    from laco.stream.plan import model_shape, plan_memory

    m = ctx.profile.model
    if m.max_memory is None:
        return None
    spec = folder or m.spec
    shape = model_shape(spec, m.pruning_dtype(), sentences, m.trust_remote_code)
    return plan_memory(method_name, shape, kwargs, max_memory=parse_size(m.max_memory), spec=spec,
                       bound_from="[model] max_memory")


def prune_into(method_name: str, kwargs: dict, ctx, sentences: list[str], out: Path, plan: MemoryPlan,
               folder: str | None = None) -> dict:
    """Prune layer by layer into `out` (replaced); the record, its memory plan and layer reads included."""
    from laco.stream.prune import prune_streamed

    m = ctx.profile.model
    record, _ = prune_streamed(folder or m.spec, method_name, sentences, out=out, plan=plan, force=True,
                               dtype=m.pruning_dtype(), trust_remote_code=m.trust_remote_code, **kwargs)
    return record


def prune_seconds(method_name: str, kwargs: dict, ctx, sentences: list[str], plan: MemoryPlan,
                  folder: str | None = None) -> dict:
    """Prune layer by layer again, writing nothing but the merged layers' scratch (removed): the record."""
    from laco.pruners import get_pruner
    from laco.stream.model import open_streamed

    m = ctx.profile.model
    with tempfile.TemporaryDirectory(prefix=".prune-again-", dir=ctx.store.root) as scratch:
        loaded = open_streamed(folder or m.spec, dtype=m.pruning_dtype(), cache_bytes=plan.cache, scratch=Path(scratch),
                               trust_remote_code=m.trust_remote_code)
        return get_pruner(method_name)(loaded, sentences, **kwargs).record
