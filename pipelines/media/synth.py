"""Deterministic synthetic media for tests, ``vidcap demo`` and benchmarks.

``write_video`` draws frame ``i`` so that ``read_index`` recovers ``i`` after lossy coding and
scaling: the frame is a 4 x 4 grid of black/white cells holding the 16 bits of ``i``
(row-major, bit 0 top-left). The bad-media helpers build one file per error path.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from fractions import Fraction

import av
import numpy as np

GRID = 4  # cells per side; 16 bits of frame index
_VFR_TIME_BASE = Fraction(1, 1000)
_HIGH_QUALITY = {
    "libx264": {"crf": "12"},
    "libx265": {"crf": "12", "x265-params": "log-level=none"},
}


def index_frame(i: int, width: int, height: int) -> np.ndarray:
    """RGB image whose grid cells spell ``i`` in binary."""
    bits = np.array([(i >> b) & 1 for b in range(GRID * GRID)], dtype=np.uint8).reshape(GRID, GRID)
    rows = np.minimum(np.arange(height) * GRID // height, GRID - 1)
    cols = np.minimum(np.arange(width) * GRID // width, GRID - 1)
    cells = bits[rows[:, None], cols[None, :]] * 255
    return np.repeat(cells[:, :, None], 3, axis=2)


def read_index(rgb: np.ndarray) -> int:
    """Inverse of ``index_frame`` for one (possibly scaled, lossy) HxWx3 frame."""
    height, width = rgb.shape[:2]
    luma = rgb.mean(axis=2)
    value = 0
    for r in range(GRID):
        for c in range(GRID):
            # The middle half of each cell stays clear of ringing and scaling blur at the edges.
            y0, y1 = (4 * r + 1) * height // (4 * GRID), (4 * r + 3) * height // (4 * GRID)
            x0, x1 = (4 * c + 1) * width // (4 * GRID), (4 * c + 3) * width // (4 * GRID)
            if luma[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)].mean() > 127:
                value |= 1 << (r * GRID + c)
    return value


def moving_frame(i: int, width: int, height: int) -> np.ndarray:
    """A colour gradient with a white square crossing it: something to look at in demos."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    y = np.linspace(0, 255, height, dtype=np.float32)
    img = np.stack(
        [
            np.broadcast_to((x[None, :] + 3 * i) % 256, (height, width)),
            np.broadcast_to(y[:, None], (height, width)),
            np.full((height, width), (7 * i) % 256, np.float32),
        ],
        axis=2,
    ).astype(np.uint8)
    side = max(2, min(width, height) // 4)
    left = (i * 4) % max(1, width - side)
    top = (height - side) // 2
    img[top : top + side, left : left + side] = 255
    return img


def write_video(
    path: str | os.PathLike,
    *,
    seconds: float = 2.0,
    fps: float = 10.0,
    width: int = 64,
    height: int = 48,
    codec: str = "libx264",
    pattern: str = "index",
    vfr_pts: Sequence[float] | None = None,
    rotation_deg: int = 0,
    container_format: str | None = None,
    pix_fmt: str = "yuv420p",
    codec_options: dict[str, str] | None = None,
) -> int:
    """Write a video and return its frame count.

    Frame ``i`` is shown at ``i / fps`` seconds, or at ``vfr_pts[i]`` when given (then
    ``seconds`` and ``fps`` only set the nominal rate). ``rotation_deg`` is stored as a
    counter-clockwise display-matrix rotation, as FFmpeg reads it back. ``codec_options`` are
    added to the encoder options (e.g. ``{"x264-params": "keyint=10"}`` for a fixed GOP).
    """
    draw = {"index": index_frame, "moving": moving_frame}[pattern]
    times = list(vfr_pts) if vfr_pts is not None else [i / fps for i in range(round(seconds * fps))]
    with av.open(os.fspath(path), "w", format=container_format) as out:
        stream = out.add_stream(codec, rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        stream.options = {**_HIGH_QUALITY.get(codec, {}), **(codec_options or {})}
        if codec not in _HIGH_QUALITY:
            stream.bit_rate = 8_000_000
        if vfr_pts is not None:
            stream.codec_context.time_base = _VFR_TIME_BASE
        if rotation_deg:
            stream.set_display_rotation(rotation_deg)
        for i, t in enumerate(times):
            frame = av.VideoFrame.from_ndarray(draw(i, width, height), format="rgb24")
            if vfr_pts is not None:
                frame.pts, frame.time_base = round(t / _VFR_TIME_BASE), _VFR_TIME_BASE
            else:
                frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return len(times)


# ------------------------------------------------------------------- the bad-media corpus


def write_zero_bytes(path: str | os.PathLike) -> None:
    open(path, "wb").close()


def write_random_bytes(path: str | os.PathLike, size: int = 64 * 1024, seed: int = 0) -> None:
    with open(path, "wb") as f:
        f.write(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())


def write_audio_only(path: str | os.PathLike, seconds: float = 1.0) -> None:
    """An AAC track in MP4 with no video stream."""
    rate, samples = 44100, 1024
    with av.open(os.fspath(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        for k in range(int(seconds * rate) // samples):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, samples), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, k * samples
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def write_truncated(src: str | os.PathLike, dst: str | os.PathLike, fraction: float = 0.5) -> None:
    """The first ``fraction`` of ``src``'s bytes, like an interrupted download."""
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data[: int(len(data) * fraction)])


def write_png_as_mp4(path: str | os.PathLike, width: int = 32, height: int = 24) -> None:
    """A real PNG image under a video name."""
    png = os.fspath(path) + ".png"
    av.VideoFrame.from_ndarray(index_frame(5, width, height), format="rgb24").save(png)
    shutil.move(png, path)


def write_disguised_playlist(path: str | os.PathLike, target: str, kind: str = "ffconcat") -> None:
    """A text file that makes FFmpeg open ``target`` (relative to the playlist) if allowed."""
    body = {
        "ffconcat": f"ffconcat version 1.0\nfile '{target}'\n",
        "hls": f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n",
    }[kind]
    with open(path, "w") as f:
        f.write(body)


def write_unsupported_codec(path: str | os.PathLike) -> None:
    """An AVI whose video FourCC names no codec FFmpeg knows (MPEG-4 Part 2 relabelled)."""
    write_video(path, seconds=0.5, fps=10, codec="mpeg4", container_format="avi")
    with open(path, "rb") as f:
        data = f.read()
    if data.count(b"FMP4") == 0:
        raise RuntimeError("the AVI muxer no longer writes the FMP4 tag; update this helper")
    with open(path, "wb") as f:
        f.write(data.replace(b"FMP4", b"ZZZZ"))


def write_scenes_video(
    path: str | os.PathLike,
    scene_lengths_s: Sequence[float],
    *,
    fps: float = 10.0,
    width: int = 64,
    height: int = 36,
) -> list[float]:
    """Scenes of distinct flat colours with a small square moving 1 px per frame inside each;
    returns the cut times (start of every scene but the first)."""
    palette = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (240, 240, 240)]
    frames_per_scene = [round(length * fps) for length in scene_lengths_s]
    with av.open(os.fspath(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = _HIGH_QUALITY["libx264"]
        i = 0
        for scene, count in enumerate(frames_per_scene):
            for k in range(count):
                img = np.empty((height, width, 3), np.uint8)
                img[:] = palette[scene % len(palette)]
                side = height // 4
                left = k % (width - side)
                img[side : 2 * side, left : left + side] = 0
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
                i += 1
        out.mux(stream.encode(None))
    starts = np.cumsum([0] + frames_per_scene[:-1]) / fps
    return [float(t) for t in starts[1:]]


def write_two_video_streams(path: str | os.PathLike, default_index: int | None = None) -> None:
    """An MKV with two video streams of 1 s at 10 fps: stream 0 is 64x48, stream 1 is 32x24.

    ``default_index`` sets the *default* disposition on that stream only (None: on neither).
    """
    with av.open(os.fspath(path), "w", format="matroska") as out:
        streams = []
        for index, (width, height) in enumerate(((64, 48), (32, 24))):
            stream = out.add_stream("libx264", rate=10)
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.disposition = av.stream.Disposition.default if index == default_index else 0
            streams.append(stream)
        for i in range(10):
            for stream in streams:
                img = index_frame(i, stream.width, stream.height)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
        for stream in streams:
            out.mux(stream.encode(None))


def write_huge_declared_size(
    path: str | os.PathLike, width: int = 16000, height: int = 16000
) -> None:
    """A YUV4MPEG2 header declaring ``width`` x ``height`` followed by a few bytes, not a frame.

    (16000, not 16384: FFmpeg itself refuses sizes whose padded area overflows its checks, and
    the point is to see *our* limit refuse it.)
    """
    header = f"YUV4MPEG2 W{width} H{height} F25:1 Ip A1:1 C420jpeg\nFRAME\n".encode()
    with open(path, "wb") as f:
        f.write(header + bytes(1000))


def write_zero_byte_packets(path: str | os.PathLike, frames: int = 10) -> int:
    """A NUT file of MPEG-4 frames with a zero-byte packet after every third frame.

    Sent to a decoder, an empty packet means end of stream, so ``container.decode()`` stops at
    the first one. Returns the frame count.
    """
    with av.open(os.fspath(path), "w", format="nut") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.bit_rate = 8_000_000
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(index_frame(i, 64, 48), format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
                if i % 3 == 1:
                    empty = av.Packet(b"")
                    empty.stream = stream
                    out.mux(empty)
        out.mux(stream.encode(None))
    return frames


def write_with_subtitles(
    path: str | os.PathLike, srt_text: str, *, seconds: float = 4.0, codec: str = "subrip"
) -> None:
    """An MKV with a video stream and one text subtitle stream holding the cues of ``srt_text``.

    ``subrip`` and ``webvtt`` copy the packets that FFmpeg's SRT or WebVTT demuxer reads from
    the text (PyAV's text subtitle encoders need an ASS header it cannot set); ``ass`` writes
    them as ASS events.
    """
    source_format = "webvtt" if codec == "webvtt" else "srt"
    if source_format == "webvtt":  # the same cues as WebVTT: a header and '.' before millis
        srt_text = "WEBVTT\n\n" + re.sub(r"(\d\d:\d\d:\d\d),(\d\d\d)", r"\1.\2", srt_text)
    srt_path = os.fspath(path) + "." + source_format
    with open(srt_path, "w", encoding="utf-8") as f:
        f.write(srt_text)
    try:
        with (
            av.open(srt_path, format=source_format) as src,
            av.open(os.fspath(path), "w", "matroska") as out,
        ):
            video = out.add_stream("libx264", rate=10)
            video.width, video.height, video.pix_fmt = 32, 24, "yuv420p"
            source = src.streams.subtitles[0]
            if codec in ("subrip", "webvtt"):
                subs = out.add_stream_from_template(source)
            else:
                subs = out.add_stream(codec)
                subs.time_base = source.time_base
            for i in range(round(seconds * 10)):
                frame = av.VideoFrame.from_ndarray(index_frame(i, 32, 24), format="rgb24")
                frame.pts = i
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            for packet in src.demux(source):
                if packet.size == 0:
                    continue
                if codec == "ass":  # an ASS event: ReadOrder,Layer,Style,...,Text
                    event = av.Packet(b"0,0,Default,,0,0,0,," + bytes(packet))
                    event.pts, event.dts = packet.pts, packet.dts
                    event.duration, event.time_base = packet.duration, packet.time_base
                    packet = event
                packet.stream = subs
                out.mux(packet)
    finally:
        os.remove(srt_path)


# ------------------------------------------------------------------------------ audio
