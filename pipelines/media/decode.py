"""Decode a video into sampled clips: the media layer's entry point (``iter_clips``, ``probe``).

The layer, bottom up: ``open`` decides what FFmpeg may open; ``frames`` inspects the video and
times its decoded frames (and skips the ones no sample needs); ``scenes`` finds cuts;
``sampling`` has the window and target arithmetic; ``clips`` picks frames into clips. This
module strings them together, one video at a time, streaming.

``iter_clips`` makes one sampling pass. ``chunking="scenes"`` adds a first decode pass that
keeps only a grey thumbnail and the cut times (``scenes``); ``chunking="none"`` on a file that
declares no duration adds a demux-only pass. When the sampler finds that a skipped frame could
have been picked (only possible with sparse variable-rate frames), the video is decoded again
without skipping and only the clips not yet emitted are emitted, so exact mode stays exact.

Bad files raise ``MediaError`` with a code (see ``open`` and ``frames``); a file that breaks
mid-stream does not raise: its clip in progress is cut and marked ``partial`` (see ``clips``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from fractions import Fraction

import av
import pyarrow.fs as pafs

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError
from pipelines.media.clips import ClipSampler, DecodedClip
from pipelines.media.frames import Clock, Opened, SkippedFrameMayWin, iter_frames, open_video
from pipelines.media.scenes import scene_windows

__all__ = ["DecodedClip", "VideoInfo", "iter_clips", "probe"]


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What the container header declares, plus the rotation seen on the first frame.

    ``width``/``height`` are the coded size before rotation; ``duration_s`` is None when the
    container declares no duration.
    """

    duration_s: float | None
    avg_fps: float | None
    width: int
    height: int
    codec: str
    rotation_deg: int


def probe(path: str, cfg: DecodeConfig, filesystem: pafs.FileSystem | None = None) -> VideoInfo:
    """Check the file like ``iter_clips`` would, and decode only its first frame (for rotation)."""
    clock = Clock(cfg.timeout_s)
    with open_video(path, cfg, filesystem) as opened:
        for frame in iter_frames(opened, cfg, clock):
            return VideoInfo(
                duration_s=opened.duration_s,
                avg_fps=1 / opened.frame_interval_s if opened.rate_known else None,
                width=opened.stream.codec_context.width,
                height=opened.stream.codec_context.height,
                codec=opened.stream.codec_context.name,
                rotation_deg=frame.raw.rotation,
            )
    raise MediaError(ErrorCode.EMPTY, f"{path}: no decodable video frame")


def iter_clips(
    path: str, cfg: DecodeConfig, filesystem: pafs.FileSystem | None = None
) -> Iterator[DecodedClip]:
    """Yield the clips of one video in order; raise ``MediaError`` for a bad file (see module)."""
    clock = Clock(cfg.timeout_s)
    windows = None
    if cfg.chunking == "scenes":
        with open_video(path, cfg, filesystem) as opened:
            windows = scene_windows(opened, cfg, clock)
    elif cfg.chunking == "none":
        with open_video(path, cfg, filesystem) as opened:
            end_s = opened.duration_s or _demuxed_end_s(opened, clock)
            windows = [(0.0, end_s)] if end_s else None
    emitted = 0
    try:
        for clip in _sample_pass(path, cfg, filesystem, clock, windows):
            with clock.paused():
                yield clip
            emitted += 1
    except SkippedFrameMayWin:
        # Rare (sparse variable-rate frames): decode again without skipping anything and emit
        # only the clips not yet emitted, which were exact.
        exact = cfg.model_copy(update={"nonref_margin_s": 0.0})
        for k, clip in enumerate(_sample_pass(path, exact, filesystem, clock, windows)):
            if k >= emitted:
                with clock.paused():
                    yield clip


def _sample_pass(
    path: str,
    cfg: DecodeConfig,
    filesystem: pafs.FileSystem | None,
    clock: Clock,
    windows: list[tuple[float, float]] | None,
) -> Iterator[DecodedClip]:
    with open_video(path, cfg, filesystem) as opened:
        sampler = ClipSampler(opened, cfg, windows)
        for frame in iter_frames(opened, cfg, clock, sampler):
            yield from sampler.feed(frame)
        if sampler.prev is None:
            raise MediaError(ErrorCode.EMPTY, f"{path}: no decodable video frame")
        yield from sampler.finish(broken=opened.broken)


def _demuxed_end_s(opened: Opened, clock: Clock) -> float | None:
    """The end of the video from its packets' times (no decoding), for an undeclared duration."""
    stream = opened.stream
    time_base = stream.time_base or Fraction(1, 90000)
    first = last = None
    count = 0
    try:
        for packet in opened.container.demux(stream):
            clock.check()
            if packet.size == 0:
                continue
            count += 1
            if packet.pts is not None:
                first = packet.pts if first is None else min(first, packet.pts)
                last = packet.pts if last is None else max(last, packet.pts)
    except (av.error.FFmpegError, OSError):
        pass  # a broken tail: the sampling pass marks the clip partial
    if count == 0:
        return None
    span_s = float((last - first) * time_base) if first is not None else 0.0
    if first is None:
        span_s = (count - 1) * opened.frame_interval_s
    return span_s + opened.frame_interval_s
