"""One run at a time per output folder: a lease file naming its holder, kept fresh.

``OUT/_lease.json`` holds the holder's host, pid, session and a heartbeat time that a
thread refreshes every ``ttl_s / 4``. A second run on the same ``--out`` refuses to start
(exit 2, naming the holder) while the lease is fresh. A lease is stale, and taken over,
when its heartbeat is older than ``ttl_s`` or when its holder was on this host and its
process is gone. The lease is written tmp + rename and read back after writing, so of two
runs racing for a free folder the one whose write landed last wins and the other stops.
Object stores have no conditional put in pyarrow, so there this read-back is the guard:
two runs starting within the same second on one bucket are not excluded.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pyarrow.fs as pafs

from pipelines.core.output import write_atomic
from pipelines.offline.ledger.resume import RunConflict


class OutputLocked(RunConflict):
    """Another run holds the output folder (a usage error: exit 2, like a settings clash)."""


class Lease:
    def __init__(self, fs: pafs.FileSystem, out: str, session: str, ttl_s: float = 60.0):
        self.fs, self.path, self.session, self.ttl_s = fs, f"{out}/_lease.json", session, ttl_s
        self.me = {"host": socket.gethostname(), "pid": os.getpid(), "session": session}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _read(self) -> dict | None:
        try:
            with self.fs.open_input_stream(self.path) as f:
                return json.loads(f.read())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written by someone else: treat as stale

    def _stale(self, lease: dict) -> bool:
        age = time.time() - float(lease.get("heartbeat", 0))
        if age > self.ttl_s:
            return True
        if lease.get("host") == self.me["host"]:
            try:
                os.kill(int(lease.get("pid", 0)), 0)
            except ProcessLookupError:
                return True
            except (PermissionError, ValueError):
                return False
        return False

    def _write(self) -> None:
        data = {**self.me, "heartbeat": time.time()}
        write_atomic(self.fs, self.path, json.dumps(data).encode())

    def acquire(self) -> Lease:
        held = self._read()
        if held and held.get("session") != self.session and not self._stale(held):
            age = time.time() - float(held.get("heartbeat", 0))
            raise OutputLocked(
                f"{self.path.rsplit('/', 1)[0]} is in use by another vidcap run (host "
                f"{held.get('host')}, pid {held.get('pid')}, heartbeat {age:.0f} s ago); "
                f"wait for it to finish, or delete {self.path} if that run is gone"
            )
        self._write()
        mine = self._read()
        if not mine or mine.get("session") != self.session:
            raise OutputLocked(f"another vidcap run took {self.path} at the same time")
        self._thread = threading.Thread(target=self._beat, daemon=True)
        self._thread.start()
        return self

    def _beat(self) -> None:
        while not self._stop.wait(self.ttl_s / 4):
            try:
                self._write()
            except OSError:
                pass  # a missed beat: the next one retries; ttl_s covers three misses

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        held = self._read()
        if held and held.get("session") == self.session:
            self.fs.delete_file(self.path)

    def __enter__(self) -> Lease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
