"""``vidcap report OUT``: one self-contained HTML file to look at a run.

It holds the run's summary, an index of every video, per video (the first ``max_videos``) a
strip of thumbnails re-decoded from the source at the sampled times and each clip's text on a
timeline, a table of error rows, and a plot of per-stage throughput. Images are inlined as
base64 JPEG, the plot is inline SVG, there is no script and no external resource, and a
Content-Security-Policy forbids loading any. All text is escaped: captions are model output.

Size: every part is capped in *bytes of HTML*, so the file is bounded whatever the run's size:
see ``size_bound_bytes`` (9.5 MB with the defaults; a test checks it for 1,000 videos).
"""

from __future__ import annotations

import html
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pipelines.core.output import clip_durations
from pipelines.core.paths import filesystem_for
from pipelines.tools import report_figures as fig
from pipelines.tools.export import read_clips, read_summary

DEFAULT_MAX_VIDEOS = 50  # videos shown in detail (thumbnails, timeline, captions)
DEFAULT_THUMBS_PER_VIDEO = 8
THUMBS_BUDGET_S = 120.0  # for all thumbnails of a report; later videos get a placeholder
VIDEO_TEXT_BYTES = 32_000  # timeline + captions of one video; further clips are counted only
INDEX_ROWS_MAX, INDEX_ROW_BYTES = 2_000, 700
ERROR_ROWS_MAX, ERROR_ROW_BYTES = 1_000, 1_000
THUMB_HTML_BYTES = 4 * -(-fig.THUMB_MAX_BYTES // 3) + 250  # base64 JPEG + <figure> markup
FIXED_BYTES = 64_000  # head, style, summary, per-code counts, plot, notes
_COLUMNS = [
    "video_id", "source", "clip_index", "start_s", "end_s", "frame_ts_s", "partial", "prompt",
    "text", "decode_s", "encode_s", "generate_s", "error_code", "error_message", "error_stage",
]  # fmt: skip


def size_bound_bytes(max_videos: int, thumbs_per_video: int) -> int:
    """Most bytes the report can have, for any number of videos and rows."""
    per_video = VIDEO_TEXT_BYTES + thumbs_per_video * THUMB_HTML_BYTES
    return (
        FIXED_BYTES
        + max_videos * per_video
        + INDEX_ROWS_MAX * INDEX_ROW_BYTES
        + ERROR_ROWS_MAX * ERROR_ROW_BYTES
    )


def esc(value: Any, limit: int | None = None) -> str:
    """HTML-escaped text (quotes included), cut to at most ``limit`` UTF-8 bytes with an ellipsis."""
    text = str(value)
    out = html.escape(text, quote=True)
    if limit is None or len(out.encode()) <= limit:
        return out
    pieces, used = [], 0
    for ch in text:
        piece = html.escape(ch, quote=True)
        used += len(piece.encode())
        if used > limit - 3:  # room for the 3-byte ellipsis
            break
        pieces.append(piece)
    return "".join(pieces) + "…"


@dataclass
class Video:
    video_id: str
    source: str
    rows: list[dict[str, Any]] = field(default_factory=list)  # clip rows with text

    errors: list[dict[str, Any]] = field(default_factory=list)


def group_videos(rows: list[dict[str, Any]]) -> list[Video]:
    """Videos with text first, then the failed ones; each group by video id."""
    videos: dict[str, Video] = {}
    for row in rows:
        v = videos.setdefault(row["video_id"], Video(row["video_id"], row["source"]))
        (v.errors if row["error_code"] else v.rows).append(row)
    for v in videos.values():
        v.rows.sort(key=lambda r: (r["start_s"], r["clip_index"]))
    return sorted(videos.values(), key=lambda v: (not v.rows, v.video_id))


def pick_times(rows: list[dict[str, Any]], k: int) -> list[tuple[int, float]]:
    """(clip_index, time) of up to ``k`` thumbnails: a few per clip, clips spread evenly."""
    clips = list({r["clip_index"]: r for r in rows if r["frame_ts_s"]}.values())
    if not clips or k <= 0:
        return []
    if len(clips) >= k:
        chosen = [clips[round(i * (len(clips) - 1) / max(k - 1, 1))] for i in range(k)]
        return [(c["clip_index"], c["frame_ts_s"][len(c["frame_ts_s"]) // 2]) for c in chosen]
    per_clip = min(3, k // len(clips))
    picks = []
    for c in clips:
        ts = c["frame_ts_s"]
        idx = sorted({round(i * (len(ts) - 1) / max(per_clip - 1, 1)) for i in range(per_clip)})
        picks += [(c["clip_index"], ts[i]) for i in idx]
    return picks


def _summary_html(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return '<p class="warn">No summary.json: the run did not finish (or is still running).</p>'
    rows = []
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}: {v}" for k, v in value.items()) or "–"
        rows.append(f"<tr><th>{esc(key, 100)}</th><td>{esc(value, 400)}</td></tr>")
    return f'<table class="kv">{"".join(rows[:40])}</table>'


def _index_html(videos: list[Video], detailed: int) -> str:
    rows = []
    for i, v in enumerate(videos[:INDEX_ROWS_MAX]):
        name = esc(v.video_id, 200)
        link = f'<a href="#v{i}">{name}</a>' if i < detailed else name
        codes = ", ".join(sorted({e["error_code"] for e in v.errors}))
        clips = len({r["clip_index"] for r in v.rows})
        rows.append(
            f'<tr><td>{i + 1}</td><td>{link}</td><td class="src">{esc(v.source, 300)}</td>'
            f"<td>{clips}</td><td>{esc(codes, 100)}</td></tr>"
        )
    more = len(videos) - INDEX_ROWS_MAX
    tail = f'<p class="muted">… and {more} more videos (see the Parquet).</p>' if more > 0 else ""
    return (
        "<table><tr><th>#</th><th>video</th><th>source</th><th>clips with text</th>"
        f"<th>errors</th></tr>{''.join(rows)}</table>{tail}"
    )


def _video_html(i: int, v: Video, picks: list[tuple[int, float]], thumbs: fig.Thumbs) -> str:
    head = (
        f'<section class="video" id="v{i}"><h3>{esc(v.video_id, 200)}</h3>'
        f'<p class="src">{esc(v.source, 400)}</p>'
    )
    if thumbs.problem:
        strip = f'<div class="ph">Source not readable now, no thumbnails: {esc(thumbs.problem, 400)}</div>'
    else:
        strip = "".join(
            f'<figure><img src="{fig.data_uri(jpeg)}" alt="clip {ci} at {t:.2f} s">'
            f"<figcaption>clip {ci} · {t:.2f} s</figcaption></figure>"
            for (ci, t), jpeg in zip(picks, thumbs.jpegs, strict=True)
        )
        strip = f'<div class="strip">{strip}</div>' if strip else ""
    errors = "".join(
        f'<p class="err"><code>{esc(e["error_code"], 40)}</code> ({esc(e["error_stage"], 20)}): '
        f"{esc(e['error_message'], 300)}</p>"
        for e in v.errors[:3]
    )
    total_s = max((r["end_s"] for r in v.rows), default=0.0) or 1.0
    segments, items, used, shown = [], [], 0, 0
    for r in v.rows:
        ci, start, end = r["clip_index"], r["start_s"], r["end_s"]
        seg = (
            f'<a class="seg{" partial" if r["partial"] else ""}" href="#v{i}c{ci}" '
            f'style="left:{100 * start / total_s:.2f}%;width:{100 * (end - start) / total_s:.2f}%" '
            f'title="clip {ci}: {start:.1f}–{end:.1f} s">{ci}</a>'
        )
        item = (
            f'<li id="v{i}c{ci}"><span class="t">{start:.1f}–{end:.1f} s</span> '
            f'<span class="cap">{esc(r["text"], 2000)}</span></li>'
        )
        cost = len(seg.encode()) + len(item.encode())
        if used + cost > VIDEO_TEXT_BYTES - 4_000:  # room for the heading, errors and notes
            break
        segments.append(seg)
        items.append(item)
        used += cost
        shown += 1
    more = len(v.rows) - shown
    note = f'<p class="muted">… {more} more clip rows (see the Parquet).</p>' if more else ""
    timeline = (
        f'<div class="timeline" title="0–{total_s:.1f} s">{"".join(segments)}</div>'
        f'<ol class="clips">{"".join(items)}</ol>{note}'
        if v.rows
        else ""
    )
    return f"{head}{strip}{errors}{timeline}</section>"


def _errors_html(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "<p>No error rows.</p>"
    counts = Counter(r["error_code"] for r in rows)
    table = "".join(
        f"<tr><td><code>{esc(c, 40)}</code></td><td>{n}</td></tr>"
        for c, n in sorted(counts.items())
    )
    rows = sorted(rows, key=lambda r: (r["error_code"], r["source"], r["clip_index"]))
    body = "".join(
        f"<tr><td><code>{esc(r['error_code'], 40)}</code></td><td>{esc(r['error_stage'], 20)}</td>"
        f"<td>{esc(r['video_id'], 200)}</td><td>{r['clip_index']}</td>"
        f'<td class="src">{esc(r["source"], 300)}</td><td>{esc(r["error_message"], 300)}</td></tr>'
        for r in rows[:ERROR_ROWS_MAX]
    )
    more = len(rows) - ERROR_ROWS_MAX
    tail = (
        f'<p class="muted">… and {more} more error rows (see the Parquet).</p>' if more > 0 else ""
    )
    return (
        f'<table class="counts"><tr><th>code</th><th>rows</th></tr>{table}</table>'
        "<table><tr><th>code</th><th>stage</th><th>video</th><th>clip</th><th>source</th>"
        f"<th>message</th></tr>{body}</table>{tail}"
    )


def _plot_html(ok_rows: list[dict[str, Any]], summary: dict[str, Any] | None) -> str:
    durations = clip_durations(ok_rows)
    size, _ = fig.throughput_series(durations)
    wall = f" The run's wall-clock rate was {summary['clips_per_s']} clips/s." if summary else ""
    return fig.throughput_svg(durations) + (
        '<p class="muted">Rows record how long each stage spent on a clip, not when it ran, so '
        f"this is not throughput against wall-clock time. Each point covers {size} consecutive "
        "clip(s) (in the order the writer received them, close to completion order) and divides "
        "their number by the seconds one worker of that stage was busy with them: the rate a "
        "single decode task, encoder actor or LM actor sustained (encoder and LM seconds are "
        "their batch time shared over the batch). With several workers per stage, or stages "
        "overlapping, the run as a whole goes faster than the slowest line suggests."
        + wall
        + "</p>"
    )


_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1200px}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px;
text-align:left;vertical-align:top}.kv th{background:#f4f4f4}.src{color:#555;word-break:break-all}
.muted{color:#666;font-size:12px}.warn,.err{color:#a00}.strip{display:flex;flex-wrap:wrap;gap:6px}
figure{margin:0;font-size:11px;color:#555}figure img{display:block;border:1px solid #ccc}
.ph{background:#eee;border:1px dashed #999;padding:1.5em;color:#555;width:max-content}
.timeline{position:relative;height:22px;background:#f0f0f0;margin:8px 0;border:1px solid #ccc}
.seg{position:absolute;top:0;bottom:0;background:#9ecae1;border-right:1px solid #fff;
font-size:11px;text-align:center;overflow:hidden;color:#023;text-decoration:none}
.seg.partial{background:#fdae6b}.clips{padding-left:1.5em}.t{font-family:monospace;color:#555}
section.video{border-top:1px solid #ddd;padding-top:.5em;margin-top:1em}
"""


def build_report(
    out: str,
    *,
    max_videos: int = DEFAULT_MAX_VIDEOS,
    thumbs_per_video: int = DEFAULT_THUMBS_PER_VIDEO,
    workers: int | None = None,
) -> str:
    """The report's HTML for the run in ``out`` (reads the Parquet, re-decodes thumbnails)."""
    rows = read_clips(out, _COLUMNS).to_pylist()
    summary = read_summary(out)
    videos = group_videos(rows)
    detailed = videos[:max_videos]
    picks = [pick_times(v.rows, thumbs_per_video) for v in detailed]
    deadline = time.monotonic() + THUMBS_BUDGET_S
    jobs = [(v.source, [t for _, t in p], deadline) for v, p in zip(detailed, picks, strict=True)]
    with ThreadPoolExecutor(workers or min(4, os.cpu_count() or 1)) as pool:
        thumbs = list(pool.map(lambda job: fig.grab_thumbnails(*job), jobs))
    ok_rows = [r for r in rows if not r["error_code"] and r["clip_index"] >= 0]
    sections = "".join(
        _video_html(i, v, p, t)
        for i, (v, p, t) in enumerate(zip(detailed, picks, thumbs, strict=True))
    )
    cap = ""
    if len(videos) > len(detailed):
        cap = (
            f'<p class="muted">Showing the first {len(detailed)} of {len(videos)} videos in '
            "detail (<code>--max-videos</code>); every video is in the index above.</p>"
        )
    title = f"vidcap report: {esc(out, 300)}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{title}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{title}</h1><h2>Summary</h2>{_summary_html(summary)}"
        f"<h2>Per-stage throughput</h2>{_plot_html(ok_rows, summary)}"
        f"<h2>Videos ({len(videos)})</h2>{_index_html(videos, len(detailed))}{cap}{sections}"
        f"<h2>Error rows</h2>{_errors_html([r for r in rows if r['error_code']])}"
        "</body></html>"
    )


def write_report(out: str, html_path: str | None = None, **options: Any) -> str:
    """Write the report (default ``OUT/report.html``); return where it went."""
    text = build_report(out, **options)
    dest = html_path or f"{out.rstrip('/')}/report.html"
    fs, path = filesystem_for(dest)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())
    return dest
