"""Synthetic media with sound: a video with an audio track of sine tones, and a long cheap
audio file for memory benchmarks (next to ``pipelines.media.synth``, whose index frames the video carries)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np

from pipelines.media.synth import index_frame


def tone(
    seconds: float, sample_rate: int, freq_hz: float, *, amplitude: float = 0.5, start_n: int = 0
) -> np.ndarray:
    """A float32 sine of ``seconds`` at ``freq_hz`` (phase continuous from sample ``start_n``)."""
    n = np.arange(start_n, start_n + round(seconds * sample_rate))
    return (amplitude * np.sin(2 * np.pi * freq_hz * n / sample_rate)).astype(np.float32)


def _add_audio_stream(out, codec: str, sample_rate: int, channels: int):
    layout = {1: "mono", 2: "stereo"}[channels]
    stream = out.add_stream(codec, rate=sample_rate, layout=layout)
    frame_size = stream.codec_context.frame_size or 1024  # PCM codecs take any size
    return stream, frame_size


def _audio_frames(stream, signal: np.ndarray, frame_size: int, start_n: int):
    """Encoder-ready frames of a (channels, n) float signal, pts in samples from ``start_n``."""
    fmt = stream.codec_context.format.name
    channels = signal.shape[0]
    for k in range(0, signal.shape[1], frame_size):
        piece = signal[:, k : k + frame_size]
        if fmt.startswith("s16"):
            piece = np.clip(piece * 32767, -32768, 32767).astype(np.int16)
        else:
            piece = piece.astype(np.float32)
        if not fmt.endswith("p"):  # packed: one plane, channels interleaved
            piece = piece.T.reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(piece), format=fmt, layout={1: "mono", 2: "stereo"}[channels]
        )
        frame.sample_rate = stream.codec_context.sample_rate
        frame.pts = start_n + k
        frame.time_base = Fraction(1, frame.sample_rate)
        yield frame


def write_video_with_audio(
    path: str | os.PathLike,
    *,
    tones: Sequence[tuple[float, float]] = ((2.0, 440.0),),
    sample_rate: int = 16000,
    channels: int = 1,
    audio_codec: str = "aac",
    container_format: str | None = None,
    fps: float = 5.0,
    width: int = 32,
    height: int = 24,
    video_start_s: float = 0.0,
    audio_start_s: float = 0.0,
    with_video: bool = True,
) -> float:
    """A small video with an audio track of consecutive sine tones; returns the audio seconds.

    ``tones`` are ``(seconds, freq_hz)`` pieces played one after the other (a frequency step
    shows where audio is cut). Every channel carries the same tone. The video (index frames,
    as ``write_video``) starts at ``video_start_s`` and lasts as long as the audio;
    ``audio_start_s`` delays the audio's first sample. ``with_video=False`` writes audio only.
    """
    signal = np.concatenate(
        [tone(s, sample_rate, f, start_n=0) for s, f in tones] or [np.zeros(0, np.float32)]
    )
    signal = np.repeat(signal[None, :], channels, axis=0)
    seconds = signal.shape[1] / sample_rate
    with av.open(os.fspath(path), "w", format=container_format) as out:
        # Every stream is added before the first packet is muxed (the header is written then).
        if with_video:
            video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio, frame_size = _add_audio_stream(out, audio_codec, sample_rate, channels)
        if with_video:
            first = round(video_start_s * fps)
            for i in range(max(1, round(seconds * fps))):
                img = index_frame(i, width, height)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = first + i
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
        for frame in _audio_frames(audio, signal, frame_size, round(audio_start_s * sample_rate)):
            out.mux(audio.encode(frame))
        out.mux(audio.encode(None))
    return seconds


def write_long_audio(
    path: str | os.PathLike,
    *,
    seconds: float = 3600.0,
    sample_rate: int = 16000,
    audio_codec: str = "pcm_s16le",
    freq_hz: float = 440.0,
    fps: float = 0.5,
) -> None:
    """A long, cheap-to-write file for memory benchmarks: a tone in Matroska with a 16x16
    video at ``fps`` (0 for audio only), generated piece by piece (bounded memory)."""
    with av.open(os.fspath(path), "w", format="matroska") as out:
        video = None
        if fps > 0:
            video = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
            video.width, video.height, video.pix_fmt = 16, 16, "yuv420p"
        audio, frame_size = _add_audio_stream(out, audio_codec, sample_rate, 1)
        piece_s, done_n, shown = 10.0, 0, 0
        total_n = round(seconds * sample_rate)
        while done_n < total_n:
            n = min(round(piece_s * sample_rate), total_n - done_n)
            signal = tone(n / sample_rate, sample_rate, freq_hz, start_n=done_n)[None, :]
            for frame in _audio_frames(audio, signal, frame_size, done_n):
                out.mux(audio.encode(frame))
            done_n += n
            while video is not None and shown / fps < done_n / sample_rate:
                frame = av.VideoFrame.from_ndarray(index_frame(shown, 16, 16), format="rgb24")
                frame.pts = shown
                out.mux(video.encode(frame))
                shown += 1
        out.mux(audio.encode(None))
        if video is not None:
            out.mux(video.encode(None))
