"""Frames and their clock: a checked video opened for decoding, and its frames with times.

``open_video`` opens a file under the rules of ``open`` and inspects it; ``iter_frames`` decodes
its chosen stream and times each frame. Every consumer of decoded frames (clip sampling, scene
detection, report thumbnails) takes its times from here, so they agree to the frame.

- Stream: ``open.pick_stream``; cover art does not count. Still images (PNG renamed .mp4 opens
  as ``png_pipe``) are ``no_video_stream``: a valid file that holds no video.
- Time origin: the first decoded frame's PTS. Times come from PTS x time_base; a frame without a
  PTS is placed one nominal frame interval after the previous one; frames whose time does not
  increase (duplicates, broken reordering) are dropped so times are strictly increasing.
- Sparse decoding, when a ``Guide`` says which times are still wanted: seek to the keyframe
  before a target far ahead; don't decode non-reference frames far from every target; in
  ``keyframes`` mode decode keyframes only (see ``iter_frames``).
- The ``timeout_s`` budget (``Clock``) counts only time spent decoding, not the consumer's time
  between frames, and is checked between packets, so a single FFmpeg call is not interrupted.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from typing import Protocol

import av
import pyarrow.fs as pafs

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError
from pipelines.media import sampling
from pipelines.media.open import open_media, pick_stream

_FALLBACK_FRAME_INTERVAL_S = 1 / 30
_MAX_BAD_PACKETS = 64  # consecutive undecodable packets before the stream counts as broken


@dataclasses.dataclass
class Opened:
    """An open video: its container, the stream decoded, and what the decoder learns of it."""

    container: av.container.InputContainer
    stream: av.video.stream.VideoStream
    duration_s: float | None
    frame_interval_s: float
    rate_known: bool
    sar: float
    broken: bool = False  # set by iter_frames when the demuxer failed mid-stream
    seeks: int = 0  # seeks made by iter_frames (for tests and benchmarks)
    # Latest packet PTS demuxed, sent to the decoder or not: how far the file really goes when
    # only some frames are decoded (keyframes mode, skipped tail). Kept as a PTS because the
    # time origin (first decoded frame) may not be known yet when the packet is read.
    max_packet_pts: int | None = None
    origin_pts: int | None = None

    @property
    def end_packet_s(self) -> float:
        if self.max_packet_pts is None or self.origin_pts is None:
            return -math.inf
        return float((self.max_packet_pts - self.origin_pts) * self.stream.time_base)

    # Times of packets sent with skip_frame=NONREF after the previous yielded frame (sorted).
    skipped_s: list[float] = dataclasses.field(default_factory=list)
    decoded_frames: int = 0  # frames the decoder returned, duplicates included


class Clock:
    """Wall-clock budget that does not count time spent suspended at a ``yield``."""

    def __init__(self, budget_s: float) -> None:
        self.budget_s = budget_s
        self.deadline = time.monotonic() + budget_s

    def check(self) -> None:
        if time.monotonic() > self.deadline:
            raise MediaError(ErrorCode.DECODE_TIMEOUT, f"decoding took over {self.budget_s} s")

    @contextmanager
    def paused(self) -> Iterator[None]:
        start = time.monotonic()
        try:
            yield
        finally:
            self.deadline += time.monotonic() - start


class SkippedFrameMayWin(Exception):
    """A frame not decoded (non-reference, skipped) may have been picked by a full decode."""


class Guide(Protocol):
    """What ``iter_frames`` asks its consumer to decide what it may seek past or skip."""

    def next_target_s(self) -> float:
        """The earliest time a sample still wants (``inf`` when none does)."""

    def wants_near(self, time_s: float, margin_s: float) -> bool:
        """Whether a sample still wants a frame within ``margin_s`` of ``time_s``."""


@contextmanager
def open_video(
    path: str, cfg: DecodeConfig, filesystem: pafs.FileSystem | None = None
) -> Iterator[Opened]:
    """The video of ``path``, checked (``open``, then ``inspect``) and ready to decode."""
    with open_media(path, cfg, filesystem) as container:
        yield inspect(container, path, cfg)


def inspect(container: av.container.InputContainer, path: str, cfg: DecodeConfig) -> Opened:
    """Refuse what is not a decodable video within the limits; learn its rate and shape."""
    fmt = container.format.name
    if fmt.endswith("_pipe") or fmt in ("image2", "image2pipe"):
        raise MediaError(ErrorCode.NO_VIDEO_STREAM, f"{path}: a still image ({fmt}), not a video")
    stream = pick_stream(container)
    if stream is None:
        raise MediaError(ErrorCode.NO_VIDEO_STREAM, f"{path}: no video stream")
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None:
        raise MediaError(ErrorCode.UNSUPPORTED_CODEC, f"{path}: no decoder for the video stream")
    if ctx.width * ctx.height > cfg.max_frame_pixels:
        raise MediaError(
            ErrorCode.TOO_LARGE,
            f"{path}: {ctx.width}x{ctx.height} exceeds max_frame_pixels={cfg.max_frame_pixels}",
        )
    duration_s = declared_duration_s(container, stream)
    if duration_s is not None and duration_s > cfg.max_duration_s:
        raise MediaError(
            ErrorCode.TOO_LONG,
            f"{path}: {duration_s:.1f} s exceeds max_duration_s={cfg.max_duration_s}",
        )
    rate = next(
        (r for r in (stream.average_rate, stream.guessed_rate) if r and 0 < r <= 1000), None
    )
    sar = stream.sample_aspect_ratio
    stream.thread_type = "AUTO"
    return Opened(
        container=container,
        stream=stream,
        duration_s=duration_s,
        frame_interval_s=float(1 / rate) if rate else _FALLBACK_FRAME_INTERVAL_S,
        rate_known=rate is not None,
        sar=float(sar) if sar and 0.1 < sar < 10 else 1.0,
    )


def declared_duration_s(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    """The stream's declared duration, else the container's; None when neither declares one."""
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return seconds if seconds > 0 else None


@dataclasses.dataclass
class Frame:
    """A decoded frame, its time in seconds from the first frame, and its decode order."""

    seq: int
    ts_s: float
    raw: av.VideoFrame


def iter_frames(
    opened: Opened,
    cfg: DecodeConfig,
    clock: Clock,
    guide: Guide | None = None,
) -> Iterator[Frame]:
    """Decoded frames in presentation order with their times; stops quietly if the file breaks.

    Zero-byte packets are skipped rather than sent: the decoder takes an empty packet as the
    end-of-stream signal, which is why ``container.decode()`` stops early on some Theora files.

    ``guide`` (the consumer: which target times are still unresolved) lets it skip work no
    sample needs:

    - Seek: when the earliest unresolved target is more than ``seek_min_gap_s`` (and two
      observed keyframe intervals) past the last packet, seek to the keyframe at or before it. A seek that lands *after* it
      (an imprecise demuxer) is undone by rewinding to the start with seeking off; frames at or
      before the last one yielded are dropped as duplicates, so the output is what a linear
      decode gives.
    - Non-reference frames: a packet whose time is more than ``nonref_margin_s`` (at least one
      nominal frame interval) away from every unresolved target is sent with
      ``skip_frame = NONREF``. No other frame depends on
      such a frame, and the setting travels with each packet (also into frame threads), so
      every frame within the margin of a target is decoded: a pick within the margin of its
      target is the pick a full decode makes (a skipped frame is farther away than it).
    - ``keyframes`` mode: non-keyframe packets are not sent at all (after the first keyframe
      packet, in case a demuxer flags none) and the decoder also skips non-key frames.
    """
    stream = opened.stream
    ctx = stream.codec_context
    time_base = stream.time_base or Fraction(1, 90000)
    keyframes_only = cfg.decode_mode == "keyframes"
    base_skip = "NONKEY" if keyframes_only else "DEFAULT"
    ctx.skip_frame = base_skip
    skip = base_skip
    skip_nonref = guide is not None and not keyframes_only and cfg.nonref_margin_s > 0
    # At least one frame interval: then a constant-rate source always has a frame within the
    # margin of each target, so no pick can change.
    nonref_margin_s = max(cfg.nonref_margin_s, opened.frame_interval_s)
    can_seek = guide is not None
    seek_target_s: float | None = None  # set until the first frame decoded after a seek
    last_seek_s = -math.inf  # never seek twice for the same target
    origin_pts: int | None = None
    pts_missing = False
    last_ts = -math.inf
    last_packet_s = -math.inf
    last_key_s: float | None = None
    gop_s = 0.0  # longest keyframe interval seen
    seen_key = False
    rewound = False
    skipped_any = False
    redecode_floor_s = -math.inf  # frames up to here are expected again after a seek
    seq = 0
    bad_packets = 0
    packets = opened.container.demux(stream)
    while True:
        clock.check()
        target_s = guide.next_target_s() if guide is not None else math.inf
        if (
            can_seek
            and seek_target_s is None
            and target_s > last_seek_s
            and origin_pts is not None
            and not pts_missing
            and target_s != math.inf
            and target_s - max(last_ts, last_packet_s) > max(cfg.seek_min_gap_s, 2 * gop_s)
        ):
            try:
                opened.container.seek(
                    origin_pts + int(target_s / time_base),
                    backward=True,
                    any_frame=False,
                    stream=stream,
                )
                packets = opened.container.demux(stream)
                seek_target_s, last_seek_s, last_packet_s = target_s, target_s, -math.inf
                redecode_floor_s = last_ts
                last_key_s = None  # a keyframe interval must not span the jump
                opened.skipped_s.clear()  # frames before the landing point are never compared
                opened.seeks += 1
            except av.error.FFmpegError:
                can_seek = False
        try:
            packet = next(packets, None)
        except (av.error.FFmpegError, OSError):
            opened.broken = True
            packet = None
        if packet is not None:
            if packet.size == 0:
                continue
            packet_s = (
                float((packet.pts - origin_pts) * time_base)
                if packet.pts is not None and origin_pts is not None
                else None
            )
            if packet.pts is not None and (
                opened.max_packet_pts is None or packet.pts > opened.max_packet_pts
            ):
                opened.max_packet_pts = packet.pts
            if packet.is_keyframe:
                seen_key = True
                if packet_s is not None:
                    if last_key_s is not None and packet_s > last_key_s:
                        gop_s = max(gop_s, packet_s - last_key_s)
                    last_key_s = packet_s
            elif keyframes_only and seen_key:
                continue
            if packet_s is not None:
                last_packet_s = max(last_packet_s, packet_s)
            if skip_nonref:
                want = (
                    "NONREF"
                    if packet_s is not None and not guide.wants_near(packet_s, nonref_margin_s)
                    else "DEFAULT"
                )
                if want != skip:
                    ctx.skip_frame = skip = want
                if want == "NONREF":
                    bisect.insort(opened.skipped_s, packet_s)
                    skipped_any = True
        try:
            decoded = stream.decode(packet)  # None flushes the decoder's delayed frames
            bad_packets = 0
        except av.error.FFmpegError:
            if packet is None:
                return
            bad_packets += 1
            if bad_packets > _MAX_BAD_PACKETS:
                opened.broken = True
                return
            continue
        for raw in decoded:
            opened.decoded_frames += 1
            if raw.width * raw.height > cfg.max_frame_pixels:
                raise MediaError(
                    ErrorCode.TOO_LARGE, f"frame {raw.width}x{raw.height} exceeds max_frame_pixels"
                )
            if raw.pts is None:
                pts_missing = True
                ts = 0.0 if last_ts == -math.inf else last_ts + opened.frame_interval_s
            else:
                origin_pts = raw.pts if origin_pts is None else origin_pts
                opened.origin_pts = origin_pts
                ts = float((raw.pts - origin_pts) * time_base)
            if seek_target_s is not None:
                overshot = ts > seek_target_s + sampling.TIE_EPS_S
                # Landing far before the target means keyframes are sparser than thought.
                gop_s = max(gop_s, seek_target_s - ts)
                seek_target_s = None
                if overshot:
                    # The demuxer landed past the target: frames before it were never seen.
                    # Start again from the beginning; frames up to last_ts are dropped below.
                    try:
                        opened.container.seek(origin_pts, backward=True, stream=stream)
                    except av.error.FFmpegError as e:
                        raise MediaError(ErrorCode.CORRUPT, f"cannot seek back: {e}") from e
                    packets = opened.container.demux(stream)
                    can_seek, last_packet_s, rewound = False, -math.inf, True
                    redecode_floor_s = last_ts
                    opened.skipped_s.clear()
                    break
            if ts <= last_ts:
                if skipped_any and ts > redecode_floor_s:
                    # Out-of-order times (e.g. packed MPEG-4 in AVI): which frames get dropped
                    # as duplicates depends on which were skipped, so skipping is not safe.
                    raise SkippedFrameMayWin(f"frame times go back ({ts:.3f} <= {last_ts:.3f})")
                continue
            if ts > cfg.max_duration_s:
                raise MediaError(
                    ErrorCode.TOO_LONG, f"frames run past max_duration_s={cfg.max_duration_s}"
                )
            # Only skipped times after the previous frame can matter to picks still to come.
            del opened.skipped_s[: bisect.bisect_right(opened.skipped_s, last_ts)]
            last_ts = ts
            yield Frame(seq, ts, raw)
            seq += 1
        if packet is None and not rewound:
            return
        rewound = False
