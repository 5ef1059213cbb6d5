"""Poison-input bookkeeping and the fault-injection hook used by the fault tests.

Attempts are counted in the output folder, not in memory, because the failures that
matter here kill the process that would remember them. Each driver session has its own
folder, so a video interrupted by a driver crash (not by its own fault) starts at zero.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pyarrow.fs as pafs

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


class AttemptLog:
    """Per-video attempt marks under ``OUT/_attempts/<session>/<video_key>/``."""

    def __init__(self, fs: pafs.FileSystem, root: str, session: str) -> None:
        self.fs, self.dir = fs, f"{root.rstrip('/')}/_attempts/{session}"

    def _marks(self, video_key: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(f"{self.dir}/{video_key}", allow_not_found=True)
        return self.fs.get_file_info(selector)

    def start(self, video_key: str) -> tuple[int, set[str]]:
        """Record a new attempt; return (earlier attempts, reasons they ended with)."""
        marks = self._marks(video_key)
        reasons = {m.base_name.split(".", 1)[1] for m in marks if "." in m.base_name}
        earlier = len([m for m in marks if "." not in m.base_name])
        self.fs.create_dir(f"{self.dir}/{video_key}", recursive=True)
        with self.fs.open_output_stream(f"{self.dir}/{video_key}/{uuid.uuid4().hex}"):
            pass
        return earlier, reasons

    def reason(self, video_key: str, reason: str) -> None:
        """Say why the current attempt is about to die (read by the next attempt)."""
        path = f"{self.dir}/{video_key}/{uuid.uuid4().hex}.{reason}"
        with self.fs.open_output_stream(path):
            pass

    def retries(self) -> int:
        """Attempts beyond the first, over all videos of this session."""
        infos = self.fs.get_file_info(
            pafs.FileSelector(self.dir, recursive=True, allow_not_found=True)
        )
        per_video: dict[str, int] = {}
        for info in infos:
            if info.type == pafs.FileType.File and "." not in info.base_name:
                video = info.path.rsplit("/", 2)[-2]
                per_video[video] = per_video.get(video, 0) + 1
        return sum(n - 1 for n in per_video.values())

    def clear(self) -> None:
        self.fs.delete_dir_contents(self.dir, missing_dir_ok=True)
        self.fs.delete_dir(self.dir) if self.fs.get_file_info(self.dir).type else None


def quarantine_code(reasons: set[str]) -> ErrorCode:
    for reason, code in REASON_CODES.items():
        if reason in reasons:
            return code
    return ErrorCode.WORKER_CRASH
