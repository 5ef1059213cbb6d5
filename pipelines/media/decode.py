"""Open a video through any pyarrow filesystem, check it, and stream it as sampled clips.

``iter_clips`` makes one sampling pass, holds at most one undecided raw frame plus the RGB frames
already picked for the clips not yet emitted, and converts to RGB only the frames it keeps.
``chunking="scenes"`` adds a first decode pass that keeps only a 32x18 grey thumbnail and the cut
times; ``chunking="none"`` on a file that declares no duration adds a demux-only pass.

Choices worth knowing (the rest is in ``sampling``):

- Sparse decoding (see ``_frames``): seek to the keyframe before a target far ahead; don't
  decode non-reference frames far from every target; in ``keyframes`` mode decode keyframes
  only. Exact mode stays exact: a pick that a skipped frame could have beaten (only possible
  with sparse variable-rate frames) makes the video decode again without skipping, emitting
  only the clips not yet emitted. ``DecodedClip.frame_offset_s`` records pick minus target.

- Stream: the first video stream flagged *default*, else the first one in which FFmpeg's probe
  saw packets, else the first video stream; cover art (``attached_pic``) does not count.
- Time origin: the first decoded frame's PTS. Times come from PTS x time_base; a frame without a
  PTS is placed one nominal frame interval after the previous one; frames whose time does not
  increase (duplicates, broken reordering) are dropped so ``frame_ts_s`` is strictly increasing.
- Windows come from the declared duration (the stream's, else the container's). When the
  container declares none, or frames continue past the declared end, further windows are full
  ``clip_s`` slices after the planned ones, and the last one is cut where the frames end.
- When the frames stop well before the declared duration (a truncated file) or the demuxer fails
  mid-stream, the clip in progress is cut at the last frame, keeps the targets it had reached
  (same spacing), repeats its last pick up to a valid frame count and is marked ``partial``; the
  generator then stops without raising. A clip is emitted only once a frame at or after its end
  has been decoded, so the clip that gets ``partial`` is the one the file broke in.
- Frames are scaled in libswscale (area filter) so the longer *displayed* side (sample aspect
  ratio applied) is at most ``max_side_px``, then rotated upright by the display matrix (first
  frame's rotation, rounded to 90 degrees; flips are ignored). Later frames are scaled to the
  first frame's output size, so a mid-stream resolution change keeps one shape per video.
- Safety: FFmpeg may not open any other file or URL. Known reference formats (HLS, ffconcat,
  SDP, DASH, IMF) are refused by their first bytes with ``forbidden``; as a second barrier the
  protocol whitelist is empty, nested opens through ``io_open`` are refused (``forbidden``), and
  a container that still opens as one of those demuxers is refused (``forbidden``).
- Still images (PNG renamed .mp4 opens as ``png_pipe``) are ``no_video_stream``: a valid file
  that holds no video. Random bytes are ``corrupt``.
- The ``timeout_s`` budget counts only time spent inside this module (not the consumer's time
  between clips) and is checked between packets, so a single FFmpeg call is not interrupted.
"""

from __future__ import annotations

import bisect
import dataclasses
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction

import av
import numpy as np
import pyarrow.fs as pafs

from pipelines.config import DecodeConfig
from pipelines.errors import ErrorCode, MediaError
from pipelines.media import sampling

_SNIFF_BYTES = 4096
_REFERENCE_MAGIC = (b"#EXTM3U", b"ffconcat version", b"v=0")  # HLS, ffconcat, SDP: start of file
_REFERENCE_MARKERS = (b"<MPD", b"CompositionPlaylist")  # DASH, IMF: anywhere in the first bytes
_REFERENCE_DEMUXERS = frozenset({"hls", "concat", "dash", "imf", "sdp", "rtsp", "rtp"})
_FALLBACK_FRAME_INTERVAL_S = 1 / 30
_TRUNCATION_SLACK_S = 1.0  # containers often declare audio's longer duration; don't call that "cut"
_OVERRUN_MARGIN_S = 0.1  # frames this far past the declared end mean the declaration was wrong
_MAX_BAD_PACKETS = 64  # consecutive undecodable packets before the stream counts as broken
_THUMB_SIZE = (32, 18)  # scene detection: small enough to ignore noise and cost nothing


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


@dataclasses.dataclass(frozen=True)
class DecodedClip:
    """One clip window and its sampled frames (uint8 RGB, upright, NHWC)."""

    clip_index: int
    start_s: float
    end_s: float
    frame_ts_s: tuple[float, ...]
    frames: np.ndarray
    partial: bool = False
    frame_offset_s: tuple[float, ...] = ()
    """Per frame, picked frame time minus its target time (0 when a frame sits on its target)."""


def probe(path: str, cfg: DecodeConfig, filesystem: pafs.FileSystem | None = None) -> VideoInfo:
    """Check the file like ``iter_clips`` would, and decode only its first frame (for rotation)."""
    clock = _Clock(cfg.timeout_s)
    with _open_video(path, cfg, filesystem) as opened:
        for frame in _frames(opened, cfg, clock):
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
    clock = _Clock(cfg.timeout_s)
    windows = None
    if cfg.chunking == "scenes":
        with _open_video(path, cfg, filesystem) as opened:
            windows = _scene_windows(opened, cfg, clock)
    elif cfg.chunking == "none":
        with _open_video(path, cfg, filesystem) as opened:
            end_s = opened.duration_s or _demuxed_end_s(opened, clock)
            windows = [(0.0, end_s)] if end_s else None
    emitted = 0
    try:
        for clip in _sample_pass(path, cfg, filesystem, clock, windows):
            with clock.paused():
                yield clip
            emitted += 1
    except _SkippedFrameMayWin:
        # Rare (sparse variable-rate frames): decode again without skipping anything and emit
        # only the clips not yet emitted, which were exact.
        exact = cfg.model_copy(update={"nonref_margin_s": 0.0})
        for k, clip in enumerate(_sample_pass(path, exact, filesystem, clock, windows)):
            if k >= emitted:
                with clock.paused():
                    yield clip


class _SkippedFrameMayWin(Exception):
    """A frame not decoded (non-reference, skipped) may have been picked by a full decode."""


def _sample_pass(
    path: str,
    cfg: DecodeConfig,
    filesystem: pafs.FileSystem | None,
    clock: _Clock,
    windows: list[tuple[float, float]] | None,
) -> Iterator[DecodedClip]:
    with _open_video(path, cfg, filesystem) as opened:
        sampler = _Sampler(opened, cfg, windows)
        for frame in _frames(opened, cfg, clock, sampler):
            yield from sampler.feed(frame)
        if sampler.prev is None:
            raise MediaError(ErrorCode.EMPTY, f"{path}: no decodable video frame")
        yield from sampler.finish(broken=opened.broken)


# ---------------------------------------------------------------------------- opening


@dataclasses.dataclass
class _Opened:
    container: av.container.InputContainer
    stream: av.video.stream.VideoStream
    duration_s: float | None
    frame_interval_s: float
    rate_known: bool
    sar: float
    broken: bool = False  # set by _frames when the demuxer failed mid-stream
    seeks: int = 0  # seeks made by _frames (for tests and benchmarks)
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


class _Clock:
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


def _resolve(path: str, filesystem: pafs.FileSystem | None) -> tuple[pafs.FileSystem, str]:
    if filesystem is not None:
        return filesystem, path
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path)
    try:
        return pafs.FileSystem.from_uri(path)
    except (OSError, ValueError) as e:  # unknown scheme, bad URI, missing credentials
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: cannot resolve filesystem: {e}") from e


def _check_file(fs: pafs.FileSystem, fs_path: str, path: str, cfg: DecodeConfig) -> None:
    try:
        info = fs.get_file_info(fs_path)
    except OSError as e:
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: {e}") from e
    if info.type == pafs.FileType.NotFound:
        raise MediaError(ErrorCode.NOT_FOUND, f"{path}: no such file")
    if info.type != pafs.FileType.File:
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: not a regular file ({info.type.name})")
    if info.size == 0:
        raise MediaError(ErrorCode.EMPTY, f"{path}: file is empty (0 bytes)")
    if info.size is not None and info.size > cfg.max_file_bytes:
        raise MediaError(
            ErrorCode.TOO_LARGE,
            f"{path}: {info.size} bytes exceeds max_file_bytes={cfg.max_file_bytes}",
        )


def _sniff_reference_format(head: bytes) -> bool:
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(_REFERENCE_MAGIC) or any(m in head for m in _REFERENCE_MARKERS)


@contextmanager
def _open_video(
    path: str, cfg: DecodeConfig, filesystem: pafs.FileSystem | None
) -> Iterator[_Opened]:
    fs, fs_path = _resolve(path, filesystem)
    _check_file(fs, fs_path, path, cfg)
    try:
        file = fs.open_input_file(fs_path)
    except FileNotFoundError as e:
        raise MediaError(ErrorCode.NOT_FOUND, f"{path}: {e}") from e
    except OSError as e:
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: {e}") from e
    with file:
        try:
            head = file.read(_SNIFF_BYTES)
            file.seek(0)
        except OSError as e:
            raise MediaError(ErrorCode.UNREADABLE, f"{path}: {e}") from e
        if _sniff_reference_format(head):
            raise MediaError(ErrorCode.FORBIDDEN, f"{path}: a playlist/reference file, not media")
        container = _open_container(file, path)
        try:
            yield _inspect(container, path, cfg)
        finally:
            container.close()


def _open_container(file: pafs.NativeFile, path: str) -> av.container.InputContainer:
    nested: list[str] = []

    def refuse_nested_open(url: str, flags: int, options: dict) -> None:
        nested.append(url)
        raise PermissionError(f"refused to open {url!r} referenced by the input")

    try:
        return av.open(
            file,
            container_options={"protocol_whitelist": "none"},
            io_open=refuse_nested_open,
        )
    except av.error.FFmpegError as e:
        if nested:
            raise MediaError(ErrorCode.FORBIDDEN, f"{path}: references {nested[0]!r}") from e
        raise MediaError(ErrorCode.CORRUPT, f"{path}: cannot parse container: {e}") from e
    except OSError as e:  # raised by the pyarrow file while FFmpeg reads it
        if nested:
            raise MediaError(ErrorCode.FORBIDDEN, f"{path}: references {nested[0]!r}") from e
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: {e}") from e


def _pick_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    videos = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    # FFmpeg sets start_time from the packets it read while probing, so a stream without one
    # may be declared but empty (hachoir's truncated WMV declares three, only one has packets).
    return min(
        videos,
        key=lambda s: (
            not s.disposition & av.stream.Disposition.default,
            s.start_time is None,
            s.index,
        ),
        default=None,
    )


def _inspect(container: av.container.InputContainer, path: str, cfg: DecodeConfig) -> _Opened:
    fmt = container.format.name
    if fmt in _REFERENCE_DEMUXERS:
        raise MediaError(ErrorCode.FORBIDDEN, f"{path}: {fmt} input references other files")
    if fmt.endswith("_pipe") or fmt in ("image2", "image2pipe"):
        raise MediaError(ErrorCode.NO_VIDEO_STREAM, f"{path}: a still image ({fmt}), not a video")
    stream = _pick_stream(container)
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
    duration_s = _declared_duration_s(container, stream)
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
    return _Opened(
        container=container,
        stream=stream,
        duration_s=duration_s,
        frame_interval_s=float(1 / rate) if rate else _FALLBACK_FRAME_INTERVAL_S,
        rate_known=rate is not None,
        sar=float(sar) if sar and 0.1 < sar < 10 else 1.0,
    )


def _declared_duration_s(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    elif container.duration:
        seconds = container.duration / av.time_base
    else:
        return None
    return seconds if seconds > 0 else None


# ---------------------------------------------------------------------------- decoding


@dataclasses.dataclass
class _Frame:
    seq: int
    ts_s: float
    raw: av.VideoFrame


def _frames(
    opened: _Opened,
    cfg: DecodeConfig,
    clock: _Clock,
    guide: _Sampler | None = None,
) -> Iterator[_Frame]:
    """Decoded frames in presentation order with their times; stops quietly if the file breaks.

    Zero-byte packets are skipped rather than sent: the decoder takes an empty packet as the
    end-of-stream signal, which is why ``container.decode()`` stops early on some Theora files.

    ``guide`` (the sampler: which target times are still unresolved) lets it skip work no
    sample needs:

    - Seek: when the earliest unresolved target is more than ``seek_min_gap_s`` (and two observed keyframe intervals)
      past the last packet, seek to the keyframe at or before it. A seek that lands *after* it
      (an imprecise demuxer) is undone by rewinding to the start with seeking off; frames at or
      before the last one yielded are dropped as duplicates, so the output is what a linear
      decode gives.
    - Non-reference frames: a packet whose time is more than ``nonref_margin_s`` (at least one
      nominal frame interval) away from
      every unresolved target is sent with ``skip_frame = NONREF``. No other frame depends on
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
                    raise _SkippedFrameMayWin(f"frame times go back ({ts:.3f} <= {last_ts:.3f})")
                continue
            if ts > cfg.max_duration_s:
                raise MediaError(
                    ErrorCode.TOO_LONG, f"frames run past max_duration_s={cfg.max_duration_s}"
                )
            # Only skipped times after the previous frame can matter to picks still to come.
            del opened.skipped_s[: bisect.bisect_right(opened.skipped_s, last_ts)]
            last_ts = ts
            yield _Frame(seq, ts, raw)
            seq += 1
        if packet is None and not rewound:
            return
        rewound = False


def _scene_windows(
    opened: _Opened, cfg: DecodeConfig, clock: _Clock
) -> list[tuple[float, float]] | None:
    """First pass of ``scenes`` chunking: cut times from 32x18 grey thumbnails, then windows.

    Only one thumbnail and the cut times are held. The frames are sampled in a second pass,
    because a window's targets depend on where it ends, which is known only at the next cut:
    picking in this pass would mean holding every full-size frame of the open scene.
    """
    cuts: list[float] = []
    prev: np.ndarray | None = None
    last_ts = None
    for frame in _frames(opened, cfg, clock):
        thumb = frame.raw.reformat(
            width=_THUMB_SIZE[0], height=_THUMB_SIZE[1], format="gray", interpolation="AREA"
        ).to_ndarray()
        thumb = thumb.astype(np.int16)
        if prev is not None and float(np.abs(thumb - prev).mean()) > cfg.scene_threshold:
            cuts.append(frame.ts_s)
        prev, last_ts = thumb, frame.ts_s
    if last_ts is None:
        return None  # no frame: the sampling pass reports the error
    return sampling.scene_windows(
        cuts, last_ts + opened.frame_interval_s, cfg.min_clip_s, cfg.max_clip_s
    )


def _demuxed_end_s(opened: _Opened, clock: _Clock) -> float | None:
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


# ---------------------------------------------------------------------------- sampling


@dataclasses.dataclass
class _Builder:
    """A clip being filled: its plan, and the RGB frame picked for each target so far."""

    plan: sampling.ClipPlan
    picks: list[tuple[float, np.ndarray]] = dataclasses.field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return len(self.picks) == len(self.plan.target_ts_s)

    @property
    def next_target_s(self) -> float:
        return self.plan.target_ts_s[len(self.picks)]


class _Sampler:
    """Turns the frame stream into clips: nearest-PTS pick per target, one frame of lookahead."""

    def __init__(
        self,
        opened: _Opened,
        cfg: DecodeConfig,
        windows: list[tuple[float, float]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.opened = opened
        self.skipped_s = opened.skipped_s
        self.interval_s = opened.frame_interval_s
        self.sar = opened.sar
        if windows is not None:  # from a first pass (scenes, or none with unknown duration)
            self.plans = sampling.plan_windows(windows, cfg)
        elif opened.duration_s is not None:
            self.plans = sampling.plan_clips(opened.duration_s, cfg, self.interval_s)
        else:
            self.plans = []
        # A file cut short is recognised against what it declared, else against the plan.
        self.expected_end_s = opened.duration_s or (self.plans[-1].end_s if self.plans else None)
        # Open-ended: windows continue past the planned ones, because the container declared no
        # duration or frames turned up after the declared end (some MPEG-PS files say 0.05 s).
        self.open_ended = not self.plans
        self.pending: list[_Builder] = []  # started, not yet emitted
        self.started = 0
        self.prev: _Frame | None = None
        self.converted: tuple[int, np.ndarray] | None = None
        self.out_size: tuple[int, int] | None = None  # (width, height) before rotation
        self.rot90_k = 0

    def _plan(self, index: int) -> sampling.ClipPlan | None:
        if index < len(self.plans):
            return self.plans[index]
        if not self.open_ended:
            return None
        step = self.cfg.clip_s - self.cfg.overlap_s
        start = (self.plans[-1].end_s if self.plans else 0.0) + (index - len(self.plans)) * step
        return sampling.plan_clip(index, start, start + self.cfg.clip_s, self.cfg)

    def wants_near(self, time_s: float, margin_s: float) -> bool:
        """Whether an unresolved target lies within ``margin_s`` of ``time_s``."""
        for builder in self.pending:
            targets = builder.plan.target_ts_s
            i = bisect.bisect_left(targets, time_s - margin_s, lo=len(builder.picks))
            if i < len(targets) and targets[i] <= time_s + margin_s:
                return True
        index = self.started
        while (plan := self._plan(index)) is not None and plan.start_s <= time_s + margin_s:
            i = bisect.bisect_left(plan.target_ts_s, time_s - margin_s)
            if i < len(plan.target_ts_s) and plan.target_ts_s[i] <= time_s + margin_s:
                return True
            index += 1
        return False

    def next_target_s(self) -> float:
        """The earliest time a sample still wants (``inf`` when none does)."""
        wanted = [b.next_target_s for b in self.pending if not b.resolved]
        if (plan := self._plan(self.started)) is not None:
            wanted.append(plan.target_ts_s[0])
        return min(wanted, default=math.inf)

    def feed(self, frame: _Frame) -> list[DecodedClip]:
        # A little past the declared end is normal (it is often the last PTS); well past means
        # the declaration was wrong. The window opened then starts at the declared end, so a
        # target closer to it than this margin may miss its nearest frame by up to the margin.
        if self.plans and frame.ts_s > self.plans[-1].end_s + _OVERRUN_MARGIN_S:
            self.open_ended = True
        while (plan := self._plan(self.started)) is not None and plan.start_s <= frame.ts_s:
            self.pending.append(_Builder(plan))
            self.started += 1
        for builder in self.pending:
            while not builder.resolved and builder.next_target_s <= frame.ts_s:
                t = builder.next_target_s
                prev = self.prev
                use_prev = prev is not None and sampling.is_nearer_or_tie(t, prev.ts_s, frame.ts_s)
                pick = prev if use_prev else frame
                self._check_no_skipped_frame_wins(t, pick.ts_s, frame.ts_s)
                builder.picks.append(self._rgb(pick))
        self.prev = frame
        ready = []
        while (
            self.pending and self.pending[0].resolved and self.pending[0].plan.end_s <= frame.ts_s
        ):
            ready.append(self._emit(self.pending.pop(0)))
        return ready

    def _check_no_skipped_frame_wins(self, target_s: float, pick_s: float, next_s: float) -> None:
        """Raise if a skipped frame between the two decoded neighbours beats the pick."""
        for s in self.skipped_s[: bisect.bisect_left(self.skipped_s, next_s)]:
            earlier, later = (s, pick_s) if s < pick_s else (pick_s, s)
            winner = earlier if sampling.is_nearer_or_tie(target_s, earlier, later) else later
            if winner == s:
                raise _SkippedFrameMayWin(
                    f"skipped frame at {s:.3f} s beats the pick for {target_s:.3f} s"
                )

    def finish(self, broken: bool) -> list[DecodedClip]:
        """Emit what is left when the frames stop: cut the window in progress if they stopped early."""
        last = self.prev
        if last is None:
            return []
        content_end_s = max(last.ts_s, self.opened.end_packet_s)
        covered_end_s = content_end_s + self.interval_s
        # Windows that packets reached but no decoded frame did (keyframes mode: no keyframe
        # after their start) take the last decoded frame, the nearest one there is.
        while (plan := self._plan(self.started)) is not None and plan.start_s <= content_end_s:
            self.pending.append(_Builder(plan))
            self.started += 1
        stopped_early = broken or (
            not self.open_ended
            and self.expected_end_s is not None
            and covered_end_s < self.expected_end_s - _TRUNCATION_SLACK_S
        )
        cut = stopped_early or self.open_ended
        clips = []
        for k, builder in enumerate(self.pending):
            if cut and builder.plan.end_s > covered_end_s:
                if k > 0 and self.pending[k - 1].plan.end_s >= covered_end_s:
                    continue  # overlapping windows: the previous one already covers what is left
                self._cut(builder, covered_end_s)
            while not builder.resolved:
                builder.picks.append(self._rgb(last))
            clips.append(self._emit(builder))
        self.pending = []
        if clips and stopped_early:
            clips[-1] = dataclasses.replace(clips[-1], partial=True)
        return clips

    def _cut(self, builder: _Builder, end_s: float) -> None:
        """End the window at ``end_s``, keeping the targets the frames reached (same spacing),
        then repeat the last pick up to a valid frame count."""
        plan = builder.plan
        reached = [t for t in plan.target_ts_s if t < end_s] or [plan.target_ts_s[0]]
        while len(builder.picks) < len(reached):
            builder.picks.append(self._rgb(self.prev))
        count = sampling.valid_count_at_least(len(builder.picks), self.cfg)
        builder.picks += [builder.picks[-1]] * (count - len(builder.picks))
        padded = tuple(reached) + (reached[-1],) * (count - len(reached))
        builder.plan = sampling.ClipPlan(plan.clip_index, plan.start_s, end_s, padded)

    def _emit(self, builder: _Builder) -> DecodedClip:
        plan = builder.plan
        frame_ts_s = tuple(ts for ts, _ in builder.picks)
        return DecodedClip(
            clip_index=plan.clip_index,
            start_s=plan.start_s,
            end_s=plan.end_s,
            frame_ts_s=frame_ts_s,
            frames=np.stack([rgb for _, rgb in builder.picks]),
            frame_offset_s=tuple(
                ts - t for ts, t in zip(frame_ts_s, plan.target_ts_s, strict=True)
            ),
        )

    def _rgb(self, frame: _Frame) -> tuple[float, np.ndarray]:
        if self.converted is not None and self.converted[0] == frame.seq:
            return frame.ts_s, self.converted[1]
        raw = frame.raw
        if self.out_size is None:
            self.out_size = _output_size(raw.width, raw.height, self.sar, self.cfg.max_side_px)
            self.rot90_k = round(raw.rotation / 90) % 4
        width, height = self.out_size
        rgb = raw.reformat(
            width=width, height=height, format="rgb24", interpolation="AREA"
        ).to_ndarray()
        if self.rot90_k:
            # The display matrix angle is counter-clockwise, as is np.rot90.
            rgb = np.ascontiguousarray(np.rot90(rgb, self.rot90_k))
        self.converted = (frame.seq, rgb)
        return frame.ts_s, rgb


def _output_size(width: int, height: int, sar: float, max_side_px: int) -> tuple[int, int]:
    display_w = width * sar
    scale = min(1.0, max_side_px / max(display_w, height))
    return max(1, round(display_w * scale)), max(1, round(height * scale))
