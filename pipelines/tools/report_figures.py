"""The pictures of ``vidcap report``: thumbnails grabbed from the sources, and a throughput plot.

Thumbnails: the source is opened and decoded by the media layer exactly as the job does it
(``media.frames.open_video``: size, duration, playlists and other reference formats refused, no
nested opens; the same stream, frame times and sample aspect ratio), and the decoder *seeks* to
each requested time far ahead: a thumbnail costs one seek and a few frames, not a decode of the
whole video. Times are the Parquet's ``frame_ts_s`` (seconds from the first decoded frame's PTS).
Each thumbnail is the decoded frame nearest its time (ties to the earlier, as the job picks),
scaled (sample aspect ratio applied) to fit ``THUMB_BOX_PX``, rotated upright, and stored as a
JPEG of at most ``THUMB_MAX_BYTES``.
"""

from __future__ import annotations

import base64
import bisect
import io
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import av

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError
from pipelines.media.frames import Clock, iter_frames, open_video
from pipelines.media.sampling import is_nearer_or_tie

THUMB_BOX_PX = (160, 120)  # (width, height) every thumbnail fits in
THUMB_MAX_BYTES = 10_000  # JPEG bytes per thumbnail; base64 makes it at most 13,336 in the HTML
_JPEG_QUALITIES = (75, 55, 35, 20)
# The job's checks and limits, but 30 s per video (the thumbnails not grabbed by then become a
# placeholder) and no skipped non-reference frame, so each pick is the nearest decoded frame.
_GRAB_CFG = DecodeConfig(timeout_s=30.0, nonref_margin_s=0.0)


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
    try:
        return Thumbs(jpegs=tuple(_grab(source, times_s)))
    except MediaError as exc:
        return Thumbs(problem=f"{exc.code.value}: {exc}")
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        # Changed or broke since the job read it (PyAV's errors are OSError/ValueError).
        return Thumbs(problem=f"{type(exc).__name__}: {exc}")


class _Wanted:
    """The times still without a thumbnail, in order: the decoder's guide for what to seek to."""

    def __init__(self, times_s: Sequence[float]) -> None:
        self.times_s = sorted(set(times_s))
        self.done = 0

    def next_target_s(self) -> float:
        return self.times_s[self.done] if self.done < len(self.times_s) else math.inf

    def wants_near(self, time_s: float, margin_s: float) -> bool:
        i = bisect.bisect_left(self.times_s, time_s - margin_s, lo=self.done)
        return i < len(self.times_s) and self.times_s[i] <= time_s + margin_s


def _grab(source: str, times_s: Sequence[float]) -> list[bytes]:
    wanted = _Wanted(times_s)
    jpegs: dict[float, bytes] = {}
    with open_video(source, _GRAB_CFG) as opened:
        prev = None
        for frame in iter_frames(opened, _GRAB_CFG, Clock(_GRAB_CFG.timeout_s), wanted):
            while (t := wanted.next_target_s()) <= frame.ts_s:
                early = prev is not None and is_nearer_or_tie(t, prev.ts_s, frame.ts_s)
                jpegs[t] = _jpeg((prev if early else frame).raw, opened.sar)
                wanted.done += 1
            prev = frame
            if wanted.next_target_s() == math.inf:
                break
        if prev is None:
            raise MediaError(ErrorCode.EMPTY, f"{source}: no decodable video frame")
        for t in wanted.times_s[wanted.done :]:  # past the last frame: the last frame is nearest
            jpegs[t] = _jpeg(prev.raw, opened.sar)
    return [jpegs[t] for t in times_s]


def _jpeg(frame: av.VideoFrame, sar: float) -> bytes:
    from PIL import Image

    k = round(frame.rotation / 90) % 4  # counter-clockwise quarter turns, as the decoder does
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
