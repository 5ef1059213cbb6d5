"""Open a video through any pyarrow filesystem, check it, and stream it as sampled clips.

``iter_clips`` makes one demux pass, holds at most one undecided raw frame plus the RGB frames
already picked for the clips not yet emitted, and converts to RGB only the frames it keeps.

Choices worth knowing (the rest is in ``sampling``):

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
    with _open_video(path, cfg, filesystem) as opened:
        sampler = _Sampler(opened, cfg)
        for frame in _frames(opened, cfg, clock):
            for clip in sampler.feed(frame):
                with clock.paused():
                    yield clip
        if sampler.prev is None:
            raise MediaError(ErrorCode.EMPTY, f"{path}: no decodable video frame")
        for clip in sampler.finish(broken=opened.broken):
            with clock.paused():
                yield clip


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


def _frames(opened: _Opened, cfg: DecodeConfig, clock: _Clock) -> Iterator[_Frame]:
    """Decoded frames in presentation order with their times; stops quietly if the file breaks.

    Zero-byte packets are skipped rather than sent: the decoder takes an empty packet as the
    end-of-stream signal, which is why ``container.decode()`` stops early on some Theora files.
    """
    stream = opened.stream
    time_base = stream.time_base or Fraction(1, 90000)
    origin_pts: int | None = None
    last_ts = -math.inf
    seq = 0
    bad_packets = 0
    packets = opened.container.demux(stream)
    while True:
        clock.check()
        try:
            packet = next(packets, None)
        except (av.error.FFmpegError, OSError):
            opened.broken = True
            packet = None
        if packet is not None and packet.size == 0:
            continue
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
            if raw.width * raw.height > cfg.max_frame_pixels:
                raise MediaError(
                    ErrorCode.TOO_LARGE, f"frame {raw.width}x{raw.height} exceeds max_frame_pixels"
                )
            if raw.pts is None:
                ts = 0.0 if last_ts == -math.inf else last_ts + opened.frame_interval_s
            else:
                origin_pts = raw.pts if origin_pts is None else origin_pts
                ts = float((raw.pts - origin_pts) * time_base)
            if ts <= last_ts:
                continue
            if ts > cfg.max_duration_s:
                raise MediaError(
                    ErrorCode.TOO_LONG, f"frames run past max_duration_s={cfg.max_duration_s}"
                )
            last_ts = ts
            yield _Frame(seq, ts, raw)
            seq += 1
        if packet is None:
            return


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

    def __init__(self, opened: _Opened, cfg: DecodeConfig) -> None:
        self.cfg = cfg
        self.interval_s = opened.frame_interval_s
        self.sar = opened.sar
        known = opened.duration_s is not None
        self.plans = sampling.plan_clips(opened.duration_s, cfg, self.interval_s) if known else []
        # Open-ended: windows continue past the planned ones, because the container declared no
        # duration or frames turned up after the declared end (some MPEG-PS files say 0.05 s).
        self.open_ended = not known
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
        start = (self.plans[-1].end_s if self.plans else 0.0) + (
            index - len(self.plans)
        ) * self.cfg.clip_s
        return sampling.plan_clip(index, start, start + self.cfg.clip_s, self.cfg)

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
                builder.picks.append(self._rgb(prev if use_prev else frame))
        self.prev = frame
        ready = []
        while (
            self.pending and self.pending[0].resolved and self.pending[0].plan.end_s <= frame.ts_s
        ):
            ready.append(self._emit(self.pending.pop(0)))
        return ready

    def finish(self, broken: bool) -> list[DecodedClip]:
        """Emit what is left when the frames stop: cut the window in progress if they stopped early."""
        last = self.prev
        if last is None:
            return []
        covered_end_s = last.ts_s + self.interval_s
        stopped_early = broken or (
            not self.open_ended and covered_end_s < self.plans[-1].end_s - _TRUNCATION_SLACK_S
        )
        cut = stopped_early or self.open_ended
        clips = []
        for builder in self.pending:
            if cut and builder.plan.end_s > covered_end_s:
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
        return DecodedClip(
            clip_index=plan.clip_index,
            start_s=plan.start_s,
            end_s=plan.end_s,
            frame_ts_s=tuple(ts for ts, _ in builder.picks),
            frames=np.stack([rgb for _, rgb in builder.picks]),
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
