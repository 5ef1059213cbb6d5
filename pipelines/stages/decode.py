"""Decode + chunk + sample: one video in, a stream of clips out (the only fan-out stage)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import av

from pipelines.config import DecodeConfig
from pipelines.errors import ErrorCode, MediaError, StageError
from pipelines.media.decode import iter_clips
from pipelines.records import Clip, ClipRef, FailedClip, VideoTask
from pipelines.stage import FanOutStage, Resources


class DecodeStage(FanOutStage[VideoTask, Clip | FailedClip]):
    name = "decode"

    def __init__(self, config: DecodeConfig, num_cpus: float = 1.0) -> None:
        self.config = config
        self._resources = Resources(num_cpus=num_cpus)

    @property
    def resources(self) -> Resources:
        return self._resources

    def iter_outputs(self, item: VideoTask) -> Iterator[Clip | FailedClip]:
        produced = 0
        started = time.perf_counter()
        try:
            for decoded in iter_clips(item.source, self.config):
                ref = ClipRef(
                    video_id=item.video_id,
                    source=item.source,
                    prompt=item.prompt,
                    clip_index=decoded.clip_index,
                    start_s=decoded.start_s,
                    end_s=decoded.end_s,
                    frame_ts_s=tuple(decoded.frame_ts_s),
                    partial=decoded.partial,
                )
                now = time.perf_counter()
                yield Clip(ref, decoded.frames, decode_s=now - started)
                produced += 1
                started = time.perf_counter()
        except MediaError as exc:
            yield self._failure(item, produced, exc.code, exc.message, started)
        except av.error.FFmpegError as exc:
            # An FFmpeg error the media layer did not classify is still a property of this
            # file, not of the worker: record it rather than failing the job.
            yield self._failure(item, produced, ErrorCode.CORRUPT, f"FFmpeg: {exc}", started)

    def _failure(
        self, item: VideoTask, produced: int, code: ErrorCode, message: str, started: float
    ) -> FailedClip:
        ref = ClipRef.for_video_error(item)
        if produced:
            # Clips before the failure were emitted; this row stands for the rest.
            ref = ClipRef(item.video_id, item.source, item.prompt, produced, 0.0, 0.0)
        error = StageError(code, message, self.name)
        return FailedClip(ref, error, decode_s=time.perf_counter() - started)
