"""Poison-input bookkeeping and the fault-injection hook used by the fault tests.

A decode task works on a *unit* of many videos. Attempts are counted per unit by the run's
``RunMonitor`` actor (``pipelines.stall``), which also learns which video of a unit is
being decoded. When a worker dies, the retried unit is told which video was in progress:
that video, and only it, is charged with the death; after ``max_attempts`` deaths it is
quarantined (a typed row) and the rest of its unit completes. Nothing is written per
video: one actor call per unit start and per video, one file-free ledger per session (a
driver crash starts a new session, and a video interrupted by it starts at zero).
"""

from __future__ import annotations

import hashlib
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import ray

from pipelines.errors import ErrorCode

# Fault injection for tests and chaos drills, e.g.
#   VIDCAP_FAULT_INJECT="crash_decode=poison.mp4;hang_stage=generate"
# crash_decode: the decode worker SIGKILLs itself when the source contains the value;
# hang_stage: that stage stops making progress.
FAULT_ENV = "VIDCAP_FAULT_INJECT"


def injected(name: str) -> str | None:
    for part in os.environ.get(FAULT_ENV, "").split(";"):
        key, _, value = part.partition("=")
        if key.strip() == name:
            return value.strip()
    return None


def maybe_crash(source: str) -> None:
    needle = injected("crash_decode")
    if needle and needle in source:
        os.kill(os.getpid(), signal.SIGKILL)


def maybe_hang(stage: str) -> None:
    if injected("hang_stage") == stage:
        while True:
            time.sleep(3600)


REASON_CODES = {"timeout": ErrorCode.DECODE_TIMEOUT, "oom": ErrorCode.OOM}


def quarantine_code(reasons: set[str]) -> ErrorCode:
    for reason, code in REASON_CODES.items():
        if reason in reasons:
            return code
    return ErrorCode.WORKER_CRASH


def unit_id(video_keys: Sequence[str]) -> str:
    """The same unit (same videos, same order) on every retry."""
    return hashlib.sha256("\n".join(video_keys).encode()).hexdigest()[:24]


@dataclass
class Deaths:
    """What earlier attempts of a unit left against one of its videos."""

    count: int = 0
    reasons: set[str] = field(default_factory=set)


@dataclass
class UnitAttempt:
    attempt: int
    """1 for a unit's first run; a retry after a worker death gets the next number."""
    deaths: dict[str, Deaths]
    """Per video key of the unit, only for videos that some attempt died on."""


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
