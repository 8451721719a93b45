"""Layer drop (LaCo paper, appendix B.6): LaCo's search with deletion instead of merging.

The loop, the similarity check and the target search are LaCo's own (`laco.collapse`); only the
merge mode differs: a candidate keeps layer l unchanged and deletes l+1..l+K (`merge="drop"`).
With a target ratio or layer count, T is searched so that the target is met (one-layer granule).
"""

from __future__ import annotations

from laco import LacoError
from laco.prune import pruned_fingerprint
from laco.pruners import PruneOutcome, laco_pruner


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          **params) -> PruneOutcome:
    """`params` are those of the laco pruner (C, L, H, I, T, paper_setting, seed, ...) except `merge`."""
    if "merge" in params:
        raise LacoError("drop always deletes (merge=drop); use the laco pruner for other merge modes")
    result = laco_pruner(loaded, sentences, target_ratio=target_ratio, target_layers=target_layers,
                         merge="drop", **params)
    record = result.record
    record["method"] = "drop"
    record["ablation"] = "LaCo paper appendix B.6: the LaCo loop with layer deletion instead of merging"
    record["fingerprint"] = pruned_fingerprint(record)
    return PruneOutcome(result.model, record)
