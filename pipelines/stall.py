"""Fail a job that stops making progress, naming the stage that stopped first.

Each stage adapter reports a heartbeat to a small actor after every batch. The driver
watches the time since a row last reached it; past the limit it interrupts its own
iteration and reports which stage has been silent the longest.
"""

from __future__ import annotations

import _thread
import threading
import time

import ray


class JobStalled(RuntimeError):
    pass


@ray.remote(num_cpus=0)
class HeartbeatTracker:
    def __init__(self) -> None:
        self.last: dict[str, float] = {}

    def beat(self, stage: str) -> None:
        self.last[stage] = time.time()

    def snapshot(self) -> dict[str, float]:
        return dict(self.last)


class StallWatchdog:
    def __init__(self, timeout_s: float, tracker, stages: tuple[str, ...]) -> None:
        self.timeout_s, self.tracker, self.stages = timeout_s, tracker, stages
        self.started = time.time()
        self.last_progress = time.monotonic()
        self.message: str | None = None
        self._stop = threading.Event()

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def _describe(self) -> str:
        now = time.time()
        try:
            beats = ray.get(self.tracker.snapshot.remote(), timeout=10)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            beats = {}
        # A stage that never finished a batch counts from the job's start.
        ages = {s: now - beats.get(s, self.started) for s in self.stages}
        stuck = max(ages, key=ages.get)
        others = ", ".join(f"{s}: {age:.0f} s ago" for s, age in ages.items() if s != stuck)
        return (
            f"no progress for {self.timeout_s:.0f} s: stage {stuck!r} last finished a batch "
            f"{ages[stuck]:.0f} s ago ({others}); see the Ray worker logs of that stage"
        )

    def _watch(self) -> None:
        while not self._stop.wait(min(5.0, self.timeout_s / 4)):
            if time.monotonic() - self.last_progress > self.timeout_s:
                self.message = self._describe()
                _thread.interrupt_main()
                return

    def __enter__(self) -> StallWatchdog:
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.set()
        if exc_type is KeyboardInterrupt and self.message is not None:
            raise JobStalled(self.message) from None
        return False
