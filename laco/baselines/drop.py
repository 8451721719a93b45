"""Layer drop (LaCo paper, appendix B.6): LaCo's search with deletion instead of merging.

The loop, the similarity check and the target search are LaCo's own (`laco.collapse`); only the
merge mode differs: a candidate keeps layer l unchanged and deletes l+1..l+K (`merge="drop"`).
With a target ratio or layer count, T is searched so that the target is met (one-layer granule).
"""

from __future__ import annotations

from laco import LacoError
from laco.baselines.common import reject_unknown
from laco.prune import laco_outcome
from laco.prune import peak_memory as laco_memory
from laco.prune import prune_work as laco_work
from laco.record import PruneOutcome

ABLATION = "LaCo paper appendix B.6: the LaCo loop with layer deletion instead of merging"


def peak_memory(shape, *, streamed: bool, paper_setting: str | None = None, C: int | None = None,
                engine: str = "cached", compare_engines: bool = False, **_) -> dict[str, int] | None:
    """LaCo's formula with deletion: no layer is merged, one runs at a time."""
    return laco_memory(shape, streamed=streamed, merge="drop", paper_setting=paper_setting, C=C, engine=engine,
                       compare_engines=compare_engines)


def prune_work(shape, *, paper_setting: str | None = None, C: int | None = None, L: int | None = None,
               H: int | None = None, I: int | None = None, T: float | None = None, engine: str = "cached",  # noqa: E741
               compare_engines: bool = False, target_ratio: float | None = None, target_layers: int | None = None, **_):
    """LaCo's work with deletion: no merge traffic."""
    return laco_work(shape, merge="drop", paper_setting=paper_setting, C=C, L=L, H=H, I=I, T=T, engine=engine,
                     compare_engines=compare_engines, target_ratio=target_ratio, target_layers=target_layers)


def prune(loaded, sentences: list[str], *, target_ratio: float | None = None, target_layers: int | None = None,
          paper_setting: str | None = None, C: int | None = None, L: int | None = None, H: int | None = None,
          I: int | None = None, T: float | None = None, engine: str = "cached",  # noqa: E741
          compare_engines: bool = False, calibration_file: str | dict | None = None, seed: int = 0,
          progress: bool = True, **unknown) -> PruneOutcome:
    """The laco pruner's parameters, except `merge` (always "drop")."""
    if "merge" in unknown:
        raise LacoError("drop always deletes (merge=drop); use the laco pruner for other merge modes")
    reject_unknown("drop", unknown)
    return laco_outcome(loaded, sentences, method="drop", details={"ablation": ABLATION}, merge="drop",
                        paper_setting=paper_setting, hyper={"C": C, "L": L, "H": H, "I": I, "T": T}, engine=engine,
                        compare_engines=compare_engines, target_ratio=target_ratio, target_layers=target_layers,
                        calibration_file=calibration_file, seed=seed, progress=progress)
