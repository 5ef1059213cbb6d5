"""Poison-input bookkeeping and the fault-injection hook used by the fault tests.

A decode task works on a *unit* of many videos. Attempts are counted per unit by the run's
``RunMonitor`` actor (``pipelines.offline.ledger.stall``), which also learns which video of a unit is
being decoded. When a worker dies, the retried unit is told which video was in progress:
that video, and only it, is charged with the death; after ``max_attempts`` deaths it is
quarantined (a typed row) and the rest of its unit completes. Nothing is written per
video: one actor call per unit start and per video, one file-free ledger per session (a
driver crash starts a new session, and a video interrupted by it starts at zero).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipelines.core.errors import ErrorCode

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


class UnitLedger(Protocol):
    """What a decode stage needs of the run's attempt ledger (``offline.ledger.attempts``)."""

    def start_unit(self, video_keys: Sequence[str]) -> UnitAttempt: ...

    def working_on(self, index: int) -> None: ...

    def finish_unit(self) -> None: ...

    def reason(self, reason: str) -> None: ...
