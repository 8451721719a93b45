"""laco: a small pruning core for Layer Collapse (LaCo) and its baselines.

The flow is load -> prune -> save, each in one module:
`loading` (hub id, folder, GGUF, the embedded `smollm2-135m`), `architectures` (which tensors a
merge touches), `merge` (the merge modes), `surgery` (deleting layers safely), `collapse` (the
search of the paper's Algorithm 1), `saving` (atomic output with provenance).
"""

__version__ = "0.1.0"


class LacoError(Exception):
    """A problem with the user's input, reported as one line and a non-zero exit code."""
