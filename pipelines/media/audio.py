"""A video's audio track as overlapping 16 kHz mono windows, for speech recognition.

``iter_audio_windows`` streams: it decodes, resamples (``av.AudioResampler``, flushed at
the end) and yields each window as soon as it is complete, holding at most one window plus
one decoded frame of samples, whatever the length of the track.

- Stream: the first audio stream; none is ``no_audio_stream``. The file is opened by
  ``open.open_media`` under the decoder's rules.
- Windows: window ``i`` covers ``[i * hop, i * hop + window_s)`` with ``hop = window_s -
  overlap_s``; the last one ends with the track and may be shorter. A window's own range is
  its range shrunk by ``overlap_s / 2`` on each side that has a neighbour, so the own ranges
  tile the track without gap or overlap.
- Clock: seconds from the video stream's start time (``open.pick_stream``, as subtitles
  do), so transcript times line up with clip times; an audio-only file uses its audio
  stream's start time. Samples are placed one after the other from the first decoded
  frame's time (gaps inside the track are not re-inserted). Audio before the origin is cut
  off, so the first window starts at 0; audio that starts later keeps its offset (the first
  window starts there, no silence is made up).
- Limits: ``timeout_s`` counts decoding time only, not the consumer's time between windows
  (``decode_timeout``); a declared or decoded length over ``max_duration_s`` is ``too_long``.
  A stream that breaks mid-way ends the track where it broke; one with no decodable sample
  is ``empty``.
"""

from __future__ import annotations

from collections.abc import Iterator

import av
import numpy as np
import pyarrow.fs as pafs

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError
from pipelines.core.records import AudioChunk
from pipelines.media.frames import Clock, declared_duration_s
from pipelines.media.open import open_media, pick_stream

AUDIO_RATE = 16000
_MAX_BAD_PACKETS = 64  # consecutive undecodable packets before the stream counts as broken


def iter_audio_windows(
    source: str,
    decode: DecodeConfig,
    video_key: str = "",
    window_s: float = 30.0,
    overlap_s: float = 5.0,
    filesystem: pafs.FileSystem | None = None,
) -> Iterator[AudioChunk]:
    """Yield the audio windows of ``source`` in order; raise ``MediaError`` for a bad file."""
    if not 0 <= 2 * overlap_s < window_s:
        raise ValueError(f"overlap_s={overlap_s} must be in [0, window_s / 2), window_s={window_s}")
    clock = Clock(decode.timeout_s)
    windows = _Windower(round(window_s * AUDIO_RATE), round((window_s - overlap_s) * AUDIO_RATE))
    with open_media(source, decode, filesystem) as container:
        stream = _audio_stream(container, source, decode)
        origin_s = _origin_s(container, stream)
        base_s: float | None = None  # track time of the first kept sample
        skip = 0  # samples before the origin still to drop
        for samples, first_s in _iter_samples(container, stream, clock):
            if base_s is None:
                start_s = first_s - origin_s
                base_s, skip = max(start_s, 0.0), max(round(-start_s * AUDIO_RATE), 0)
            if skip:
                cut = min(skip, len(samples))
                samples, skip = samples[cut:], skip - cut
            if base_s + (windows.total + len(samples)) / AUDIO_RATE > decode.max_duration_s:
                raise MediaError(
                    ErrorCode.TOO_LONG, f"{source}: audio runs past {decode.max_duration_s} s"
                )
            for window in windows.push(samples):
                with clock.paused():
                    yield _chunk(window, windows, video_key, base_s)
        if base_s is None or windows.total == 0:
            raise MediaError(ErrorCode.EMPTY, f"{source}: no decodable audio")
        for window in windows.finish():
            yield _chunk(window, windows, video_key, base_s)


def _audio_stream(
    container: av.container.InputContainer, source: str, decode: DecodeConfig
) -> av.audio.stream.AudioStream:
    if not container.streams.audio:
        raise MediaError(ErrorCode.NO_AUDIO_STREAM, f"{source}: no audio stream")
    stream = container.streams.audio[0]
    if stream.codec_context is None or stream.codec_context.codec is None:
        raise MediaError(ErrorCode.UNSUPPORTED_CODEC, f"{source}: no decoder for the audio stream")
    duration_s = declared_duration_s(container, stream)
    if duration_s is not None and duration_s > decode.max_duration_s:
        raise MediaError(
            ErrorCode.TOO_LONG,
            f"{source}: {duration_s:.1f} s exceeds max_duration_s={decode.max_duration_s}",
        )
    return stream


def _origin_s(container: av.container.InputContainer, audio: av.audio.stream.AudioStream) -> float:
    """Time zero of the decoder's clock: the video stream's start, else the audio's."""
    for stream in (pick_stream(container), audio):
        if stream is not None and stream.start_time is not None and stream.time_base:
            return float(stream.start_time * stream.time_base)
    return 0.0


def _iter_samples(
    container: av.container.InputContainer, stream: av.audio.stream.AudioStream, clock: Clock
) -> Iterator[tuple[np.ndarray, float]]:
    """Resampled mono float32 pieces of the track, each with the time of the first decoded
    frame (seconds on the stream's own clock; the same value for every piece)."""
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    first_s: float | None = None
    bad_packets = 0
    packets = container.demux(stream)
    while True:
        clock.check()
        try:
            packet = next(packets, None)
        except (av.error.FFmpegError, OSError):
            packet = None  # a broken tail: the track ends here
        if packet is not None and packet.size == 0:
            continue  # an empty packet would tell the decoder the stream has ended
        try:
            frames = stream.decode(packet)  # None flushes the decoder
            bad_packets = 0
        except av.error.FFmpegError:
            if packet is None:
                break
            bad_packets += 1
            if bad_packets > _MAX_BAD_PACKETS:
                break
            continue
        for frame in frames:
            if first_s is None:
                pts, time_base = frame.pts, frame.time_base or stream.time_base
                first_s = float(pts * time_base) if pts is not None and time_base else 0.0
            for out in resampler.resample(frame):
                yield out.to_ndarray().reshape(-1), first_s
        if packet is None:
            break
    if first_s is not None:
        for out in resampler.resample(None):
            yield out.to_ndarray().reshape(-1), first_s


class _Windower:
    """Cuts a stream of samples into overlapping windows, holding about one window.

    A window is emitted once a sample past its end has arrived (then it is known not to be
    the last); ``finish`` emits the last one, cut at the end of the track.
    """

    def __init__(self, window_n: int, hop_n: int) -> None:
        self.window_n, self.hop_n = window_n, hop_n
        self.chunks: list[np.ndarray] = []
        self.held = 0  # samples in chunks
        self.first = 0  # track index of chunks' first sample
        self.index = 0  # next window to emit

    @property
    def total(self) -> int:
        return self.first + self.held

    def push(self, samples: np.ndarray) -> Iterator[tuple[int, int, np.ndarray, bool]]:
        if len(samples):
            self.chunks.append(samples)
            self.held += len(samples)
        while self.total > self.index * self.hop_n + self.window_n:
            yield self._take(last=False)

    def finish(self) -> Iterator[tuple[int, int, np.ndarray, bool]]:
        if self.total > self.index * self.hop_n:
            yield self._take(last=True)

    def _take(self, last: bool) -> tuple[int, int, np.ndarray, bool]:
        held = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
        start = self.index * self.hop_n
        window = held[start - self.first : start - self.first + self.window_n].copy()
        nxt = start + self.hop_n
        self.chunks = [held[nxt - self.first :]]  # keeps the overlap for the next window
        self.held -= nxt - self.first
        self.first = nxt
        self.index += 1
        return self.index - 1, start, window, last


def _chunk(
    window: tuple[int, int, np.ndarray, bool], windows: _Windower, video_key: str, base_s: float
) -> AudioChunk:
    index, start_n, samples, last = window
    start_s = base_s + start_n / AUDIO_RATE
    end_s = start_s + len(samples) / AUDIO_RATE

    def boundary_s(i: int) -> float:
        # Middle of the overlap after window i; one formula for both neighbours, so the
        # own ranges meet exactly.
        return (
            base_s + ((i + 1) * windows.hop_n + (windows.window_n - windows.hop_n) / 2) / AUDIO_RATE
        )

    return AudioChunk(
        video_key=video_key,
        index=index,
        start_s=start_s,
        end_s=end_s,
        own_start_s=boundary_s(index - 1) if index > 0 else start_s,
        own_end_s=end_s if last else boundary_s(index),
        samples=samples,
    )
