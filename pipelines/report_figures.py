"""The pictures of ``vidcap report``: thumbnails grabbed from the sources, and a throughput plot.

Thumbnails: the source is checked exactly as the job checks it (``probe``: size, duration,
playlists and other reference formats refused, no nested opens), then opened again with the
same FFmpeg restrictions and *seeked* to each requested time: a thumbnail costs one seek and a
few frames, not a decode of the whole video. Times are the Parquet's ``frame_ts_s``: seconds
from the first decoded frame's PTS, so the grab decodes that first frame to learn the origin.
Each thumbnail is the decoded frame nearest its time, scaled (sample aspect ratio applied) to
fit ``THUMB_BOX_PX``, rotated upright, and stored as a JPEG of at most ``THUMB_MAX_BYTES``.
"""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.config import DecodeConfig
from pipelines.errors import MediaError

THUMB_BOX_PX = (160, 120)  # (width, height) every thumbnail fits in
THUMB_MAX_BYTES = 10_000  # JPEG bytes per thumbnail; base64 makes it at most 13,336 in the HTML
_JPEG_QUALITIES = (75, 55, 35, 20)
_SEEK_AHEAD_S = 2.0  # decode forward instead of seeking when the next time is this close
_GRAB_TIMEOUT_S = 30.0  # per video; the thumbnails not grabbed by then become a placeholder


@dataclass(frozen=True)
class Thumbs:
    """JPEG bytes per requested time (same order), or why there are none."""

    jpegs: tuple[bytes, ...] = ()
    problem: str = ""


def data_uri(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def grab_thumbnails(source: str, times_s: Sequence[float], deadline: float = math.inf) -> Thumbs:
    """Grab one thumbnail per time; an unreadable source gives ``Thumbs(problem=...)``.

    ``deadline`` (``time.monotonic()``) is the report's budget for all thumbnails: past it no
    source is opened any more (an unreachable object store can stall each open for seconds).
    """
    if not times_s:
        return Thumbs()
    if time.monotonic() > deadline:
        return Thumbs(problem="not grabbed: the report's time budget for thumbnails ran out")
    import av

    from pipelines.media.decode import probe

    try:
        # Same checks (and limits) as the job: a file the job would refuse is not opened here.
        probe(source, DecodeConfig(timeout_s=_GRAB_TIMEOUT_S))
        return Thumbs(jpegs=tuple(_grab(source, times_s)))
    except MediaError as exc:
        return Thumbs(problem=f"{exc.code.value}: {exc}")
    except (av.error.FFmpegError, OSError, TimeoutError, ValueError, StopIteration) as exc:
        # Changed or broke since the job read it (PyAV's errors are OSError/ValueError).
        return Thumbs(problem=f"{type(exc).__name__}: {exc}")


def _open(source: str):
    import av

    from pipelines.inputs import filesystem_for

    fs, path = filesystem_for(source)
    file = fs.open_input_file(path)

    def refuse(url: str, flags: int, options: dict) -> None:
        raise PermissionError(f"refused to open {url!r} referenced by the input")

    return file, av.open(file, container_options={"protocol_whitelist": "none"}, io_open=refuse)


def _frames(container, stream, deadline: float):
    """(time in s, frame) in decode order, as the decoder times them; stops where the file breaks.

    Times come from PTS x the stream's time base (frames flushed from the decoder may carry no
    time base of their own); a frame without a PTS is placed one frame interval after the last.
    """
    import av

    rate = stream.average_rate or stream.guessed_rate
    interval_s = float(1 / rate) if rate and 0 < rate <= 1000 else 1 / 30
    last_s = None

    def timed(decoded):
        nonlocal last_s
        for frame in decoded:
            if frame.pts is not None:
                last_s = float(frame.pts * stream.time_base)
            elif last_s is not None:
                last_s += interval_s
            else:
                continue
            yield last_s, frame

    try:
        for packet in container.demux(stream):
            if time.monotonic() > deadline:
                raise TimeoutError(f"thumbnails took over {_GRAB_TIMEOUT_S:.0f} s")
            # An empty packet would end the stream early (some demuxers send them mid-stream).
            if packet.size:
                yield from timed(packet.decode())
        yield from timed(stream.codec_context.decode(None))  # frames the decoder still holds
    except av.error.FFmpegError:
        return


def _grab(source: str, times_s: Sequence[float]) -> list[bytes]:
    from pipelines.media import decode

    deadline = time.monotonic() + _GRAB_TIMEOUT_S
    file, container = _open(source)
    with file, container:
        stream = decode._pick_stream(container)  # the stream the job decoded
        stream.thread_type = "AUTO"
        frames = _frames(container, stream, deadline)
        cur = next(frames)  # probe() saw a frame, so there is one
        origin_s, prev = cur[0], None
        picks = {}
        for t in sorted(set(times_s)):
            target = origin_s + t
            if target - cur[0] > _SEEK_AHEAD_S:
                # Lands on the keyframe at or before the target, then decodes forward.
                container.seek(round(target / stream.time_base), stream=stream, backward=True)
                frames = _frames(container, stream, deadline)
                cur, prev = next(frames, cur), None
            while cur[0] < target:
                nxt = next(frames, None)
                if nxt is None:
                    break
                prev, cur = cur, nxt
            near = cur
            if prev is not None and abs(prev[0] - target) < abs(cur[0] - target):
                near = prev
            picks[t] = _jpeg(near[1], stream)
        return [picks[t] for t in times_s]


def _jpeg(frame, stream) -> bytes:
    from PIL import Image

    k = round(frame.rotation / 90) % 4  # counter-clockwise quarter turns, as the decoder does
    sar = stream.sample_aspect_ratio
    sar = float(sar) if sar and 0.1 < sar < 10 else 1.0
    box_w, box_h = THUMB_BOX_PX if k % 2 == 0 else THUMB_BOX_PX[::-1]
    display_w = frame.width * sar
    scale = min(box_w / display_w, box_h / frame.height)
    size = (max(1, round(display_w * scale)), max(1, round(frame.height * scale)))
    image = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
    image = image.to_image()
    if k:
        image = image.rotate(90 * k, expand=True)  # PIL also turns counter-clockwise
    for quality in _JPEG_QUALITIES:
        buf = io.BytesIO()
        image.save(buf, format="JPEG", quality=quality)
        if buf.tell() <= THUMB_MAX_BYTES:
            return buf.getvalue()
    image = image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.BOX)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=_JPEG_QUALITIES[-1])
    return buf.getvalue()


# ----------------------------------------------------------------------- throughput plot

_COLOURS = {"decode": "#1b9e77", "encode": "#d95f02", "generate": "#7570b3"}
MAX_POINTS = 100  # per stage; consecutive rows are bucketed to stay under it


def throughput_series(
    durations: dict[str, Sequence[float]], max_points: int = MAX_POINTS
) -> tuple[int, dict[str, list[tuple[float, float]]]]:
    """Bucket consecutive clips; per stage and bucket, clips / that stage's busy seconds.

    Returns (clips per bucket, {stage: [(clip position of the bucket's middle, clips per s)]}).
    A bucket whose busy time is 0 (a stage that recorded no time) has no point.
    """
    n = len(next(iter(durations.values()), ()))
    size = max(1, math.ceil(n / max_points))
    series: dict[str, list[tuple[float, float]]] = {}
    for stage, secs in durations.items():
        points: list[tuple[float, float]] = []
        for start in range(0, n, size):
            chunk = secs[start : start + size]
            busy = sum(chunk)
            if busy > 0:
                points.append((start + len(chunk) / 2, len(chunk) / busy))
        series[stage] = points
    return size, series


def throughput_svg(
    durations: dict[str, Sequence[float]], width: int = 720, height: int = 260
) -> str:
    """An inline SVG: clips per busy-second of each stage against clip order, log-scaled y."""
    size, series = throughput_series(durations)
    values = [v for pts in series.values() for _, v in pts]
    n = len(next(iter(durations.values()), ()))
    if not values:
        return '<p class="muted">No successful clips with timings: nothing to plot.</p>'
    left, right, top, bottom = 56, 110, 12, 36
    lo = math.floor(math.log10(min(values)))
    hi = max(lo + 1, math.ceil(math.log10(max(values))))
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: float) -> float:
        return left + plot_w * (i / max(n, 1))

    def y(v: float) -> float:
        return top + plot_h * (1 - (math.log10(v) - lo) / (hi - lo))

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="per-stage throughput">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" '
        'stroke="#999"/>',
    ]
    for d in range(lo, hi + 1):
        yy = y(10.0**d)
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>'
            f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{10.0**d:g}</text>'
        )
    for i in (0, n // 2, n):
        parts.append(
            f'<text x="{x(i):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{i}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle">'
        "clips, in the order the writer received them</text>"
        f'<text transform="translate(14 {top + plot_h / 2:.1f}) rotate(-90)" '
        'text-anchor="middle">clips per busy second</text>'
    )
    for k, (stage, pts) in enumerate(series.items()):
        colour = _COLOURS.get(stage, "#333")
        coords = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in pts)
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{coords}"/>'
        )
        if len(pts) == 1:
            ((i, v),) = pts
            parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"/>')
        ly = top + 14 + 18 * k
        parts.append(
            f'<line x1="{width - right + 10}" x2="{width - right + 30}" y1="{ly - 4}" '
            f'y2="{ly - 4}" stroke="{colour}" stroke-width="3"/>'
            f'<text x="{width - right + 34}" y="{ly}">{stage}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
