"""Named points where the kill-safety tests SIGKILL a real process (a no-op unless asked).

`LACO_KILL_AT=NAME` (or `NAME@N`, the N-th time the point is reached) makes the process kill itself
with SIGKILL at that point: no cleanup handler runs, exactly as when an operator or the OOM killer
stops it. The tests then check that what the process wrote is either absent or complete and that a
rerun resumes. Points: collapse:step (each step of the LaCo search), save:written (weights written,
folder not yet renamed into place), bench:pruned (a model pruned, not yet saved), bench:measuring
(a measurement done, its result not yet written), bench:written (a result written).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

ENV = "LACO_KILL_AT"
_seen: Counter = Counter()


def kill_point(name: str) -> None:
    wanted = os.environ.get(ENV)
    if not wanted:
        return
    point, _, nth = wanted.partition("@")
    if point != name:
        return
    _seen[name] += 1
    if _seen[name] >= (int(nth) if nth.isdigit() else 1):
        os.kill(os.getpid(), signal.SIGKILL)
