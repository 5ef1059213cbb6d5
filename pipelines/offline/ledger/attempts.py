"""Unit attempts: which video of a work unit killed its worker.

A decode task works on a *unit* of many videos. Attempts are counted per unit by the run's
``RunMonitor`` actor (``ledger.stall``), which also learns which video of a unit is being
decoded. When a worker dies, the retried unit is told which video was in progress: that
video, and only it, is charged with the death; after ``max_attempts`` deaths it is
quarantined (a typed row) and the rest of its unit completes. Nothing is written per
video: one actor call per unit start and per video, one file-free ledger per session (a
driver crash starts a new session, and a video interrupted by it starts at zero).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import ray

from pipelines.core.faults import Deaths, UnitAttempt


def unit_id(video_keys: Sequence[str]) -> str:
    """The same unit (same videos, same order) on every retry."""
    return hashlib.sha256("\n".join(video_keys).encode()).hexdigest()[:24]


class AttemptLog:
    """Client of the run monitor's attempt ledger; picklable, used inside decode tasks.

    ``monitor`` is the ``RunMonitor`` actor, or a ``MonitorState`` in the same process
    (unit tests, where the calls are plain method calls)."""

    def __init__(self, monitor) -> None:
        self.monitor = monitor
        self._unit = ""

    def _call(self, name: str, *args):
        method = getattr(self.monitor, name)
        # Waited for: a death right after ``working_on`` must be charged to that video.
        return ray.get(method.remote(*args)) if hasattr(method, "remote") else method(*args)

    def start_unit(self, video_keys: Sequence[str]) -> UnitAttempt:
        self._unit = unit_id(video_keys)
        attempt, deaths = self._call("start_unit", self._unit, list(video_keys))
        return UnitAttempt(attempt, {k: Deaths(n, set(r)) for k, (n, r) in deaths.items()})

    def working_on(self, index: int) -> None:
        """Say which video of the unit is being decoded (-1: the unit is finished)."""
        self._call("working_on", self._unit, index)

    def finish_unit(self) -> None:
        self.working_on(-1)

    def reason(self, reason: str) -> None:
        """Say why the current attempt is about to die (read by the next attempt)."""
        self._call("reason", self._unit, reason)
