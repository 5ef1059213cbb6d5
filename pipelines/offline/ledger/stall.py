"""The run monitor, and the watchdog that fails a job that stops making progress.

``RunMonitor`` is one small actor per job session. Stage adapters report heartbeats to it
(at most about once a second per worker and stage); decode tasks keep their unit attempt
ledger in it (see ``pipelines.core.faults``). Its state is per unit in flight and per video
that killed a worker, never per input.

The driver watches the time since a row last reached it; past the limit it interrupts its
own iteration and reports which stage has been silent the longest.
"""

from __future__ import annotations

import _thread
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
