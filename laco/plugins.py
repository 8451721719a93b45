"""Pruning methods of other packages, registered under the entry-point group `laco_bench.pruners`.

A package declares each method in its pyproject.toml, by name:

    [project.entry-points."laco_bench.pruners"]
    my-method = "my_package.pruner:prune"

The callable has the interface of the shipped pruners (`laco.pruners`): its keyword-only
parameters are the method's parameters, and its docstring's first line (or a `summary`
attribute) is the line `laco prune --list-methods` prints. A plugin that fails to load, or whose
name is already taken, is one line on stderr naming its package and is left out; the shipped
methods and the other plugins still work.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata

GROUP = "laco_bench.pruners"


@dataclass(frozen=True)
class Plugin:
    name: str
    entry: str  # "module:callable", as the package declares it
    package: str  # the distribution that registers it


@lru_cache(maxsize=8)
def plugins(taken: frozenset[str]) -> dict[str, Plugin]:
    """The methods plugins register that load and whose names are not in `taken` (the shipped ones);
    each refused one is said once on stderr."""
    found: dict[str, Plugin] = {}
    for ep in metadata.entry_points(group=GROUP):
        package = ep.dist.name if ep.dist is not None else ep.value.split(":")[0]
        owner = "a shipped method" if ep.name in taken else (f"package {found[ep.name].package}" if ep.name in found
                                                             else None)
        problem = f"the name is taken by {owner}" if owner else load_problem(ep)
        if problem:
            print(f"laco: pruning method {ep.name!r} of package {package} left out: {problem}", file=sys.stderr)
            continue
        found[ep.name] = Plugin(ep.name, ep.value, package)
    return found


def load_problem(ep: metadata.EntryPoint) -> str | None:
    """Why the entry point's callable cannot be used (None: it loads and is callable)."""
    try:
        pruner = ep.load()
    except Exception as exc:  # whatever the plugin's import raises, the shipped methods must still work
        text = str(exc).strip().splitlines()
        return f"it does not load ({type(exc).__name__}{': ' + text[0] if text else ''})"
    return None if callable(pruner) else f"{ep.value} is not callable"
