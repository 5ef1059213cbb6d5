"""The run monitor, and the watchdog that fails a job that stops making progress.

``RunMonitor`` is one small actor per job session. Stage adapters report heartbeats to it
(at most about once a second per worker and stage); decode tasks keep their unit attempt
ledger in it (see ``pipelines.core.faults``). Its state is per unit in flight and per video
that killed a worker, never per input.

The driver watches the time since a row last reached it; past the limit it interrupts its
own iteration and reports which stage has been silent the longest.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import ray


class JobStalled(RuntimeError):
    pass


class MonitorState:
    """The run monitor's state and methods; ``RunMonitor`` runs it as an actor."""

    def __init__(self) -> None:
        self.last: dict[str, float] = {}
        # unit -> [attempts so far, index of the video in progress or -1, its video keys]
        self.units: dict[str, list] = {}
        self.deaths: dict[str, list] = {}  # video key -> [count, reasons]
        self.retries = 0

    def beat(self, stage: str) -> None:
        self.last[stage] = time.time()

    def snapshot(self) -> dict[str, float]:
        return dict(self.last)

    def start_unit(self, unit: str, keys: list[str]) -> tuple[int, dict[str, tuple]]:
        state = self.units.get(unit)
        if state is None:
            state = self.units[unit] = [0, -1, keys]
        else:
            self.retries += 1
            if state[1] >= 0:  # the previous attempt died while on this video
                self.deaths.setdefault(keys[state[1]], [0, set()])[0] += 1
        state[0] += 1
        state[1] = -1
        deaths = {k: (d[0], sorted(d[1])) for k in keys if (d := self.deaths.get(k))}
        return state[0], deaths

    def working_on(self, unit: str, index: int) -> None:
        state = self.units.get(unit)
        if state is None:
            return
        if index < 0 and state[0] == 1:
            del self.units[unit]  # finished on its first try: nothing left to remember
        else:
            state[1] = index

    def reason(self, unit: str, reason: str) -> None:
        state = self.units.get(unit)
        if state is not None and state[1] >= 0:
            self.deaths.setdefault(state[2][state[1]], [0, set()])[1].add(reason)

    def retry_count(self) -> int:
        return self.retries


RunMonitor = ray.remote(num_cpus=0)(MonitorState)


class StallWatchdog:
    def __init__(
        self, timeout_s: float, tracker, stages: tuple[str, ...], startup_s: float = 900.0
    ) -> None:
        self.timeout_s, self.tracker, self.stages = timeout_s, tracker, stages
        self.startup_s = max(startup_s, timeout_s)
        self.started = time.time()
        self.last_progress = time.monotonic()
        self.message: str | None = None
        self._stop = threading.Event()

    def progress(self) -> None:
        self.last_progress = time.monotonic()

    def _beats(self) -> dict[str, float]:
        try:
            return ray.get(self.tracker.snapshot.remote(), timeout=10)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            return {}

    def _describe(self, beats: dict[str, float]) -> str:
        now = time.time()
        last = {s: beats.get(s, float("-inf")) for s in self.stages}
        # From the last stage up: a stage whose upstream finished a batch after it last did
        # holds input it does not finish (stuck); one that is not behind is starved, so
        # look further up. A stage that never finished a batch counts from the start.
        stuck = self.stages[0]
        for up, down in reversed(list(zip(self.stages, self.stages[1:], strict=False))):
            if last[up] > last[down]:
                stuck = down
                break
        ages = {s: now - max(last[s], self.started) for s in self.stages}
        others = ", ".join(f"{s}: {age:.0f} s ago" for s, age in ages.items() if s != stuck)
        return (
            f"no progress for {self.timeout_s:.0f} s: stage {stuck!r} last finished a batch "
            f"{ages[stuck]:.0f} s ago ({others}); see the Ray worker logs of that stage"
        )

    def _starting(self, beats: dict[str, float]) -> bool:
        """A model stage whose actors have not loaded yet (decode starts at once)."""
        return any(s not in beats and f"{s}:ready" not in beats for s in self.stages[1:])

    def _watch(self) -> None:
        while not self._stop.wait(min(5.0, self.timeout_s / 4)):
            if time.monotonic() - self.last_progress <= self.timeout_s:
                continue
            beats = self._beats()
            # Model actors load their weights while decode already runs: until every stage
            # is up, silence is start-up, not a stall, and the timeout counts from when
            # the last one came up (for up to startup_s; past it the job fails all the same).
            if self._starting(beats) and time.time() - self.started < self.startup_s:
                self.last_progress = time.monotonic()
                continue
            self.message = self._describe(beats)
            # A real SIGINT, not _thread.interrupt_main(): the main thread may be blocked
            # in a wait that only a signal wakes (Ray Data's output queue).
            os.kill(os.getpid(), signal.SIGINT)
            return

    def __enter__(self) -> StallWatchdog:
        threading.Thread(target=self._watch, daemon=True).start()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._stop.set()
        if exc_type is KeyboardInterrupt and self.message is not None:
            raise JobStalled(self.message) from None
        return False
