"""Read a run's output back, and export its captions as subtitles (SRT, WebVTT) or JSON Lines.

``vidcap export OUT --format srt|vtt|jsonl [--dest DIR]`` writes one file per video (named after
its ``video_id``, made filesystem-safe) with one cue per clip row: the clip's ``start_s`` and
``end_s`` are the cue times (seconds from the video's first frame, as in the Parquet), the row's
``text`` is the cue text. Error rows are skipped; rows with empty text too. Several prompts per
clip give several cues with the same times (both formats allow overlapping cues); ``--prompt-index
N`` keeps one prompt's rows.

Escaping, per format:

- WebVTT: ``&``, ``<`` and ``>`` become character references (the spec requires the first two;
  escaping ``>`` also keeps ``-->`` out of cue text). Blank lines, which end a cue, are dropped.
- SRT has no escape mechanism: blank lines are dropped and ``-->`` becomes ``->`` so no text
  line reads as a timing line. Players that honour SRT's informal ``<i>``/``<b>``/``<font>``
  tags will still style text that contains them; use WebVTT when captions must show verbatim.
- JSON Lines: one JSON object per clip row (``json.dumps``, UTF-8, non-ASCII kept).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.output import committed_shards
from pipelines.core.paths import filesystem_for

FORMATS = ("srt", "vtt", "jsonl")
JSONL_FIELDS = (
    "video_id",
    "source",
    "clip_index",
    "start_s",
    "end_s",
    "partial",
    "prompt",
    "prompt_index",
    "task",
    "text",
    "model_id",
    "output_tokens",
)
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


class RunNotFound(Exception):
    """The folder holds no ``clips/part-*.parquet``: not (yet) a vidcap output."""


def read_clips(out: str, columns: list[str] | None = None) -> pa.Table:
    """All rows of ``OUT/clips``, shard by shard in name order (the order the writer wrote)."""
    fs, root = filesystem_for(out)
    parts = committed_shards(fs, f"{root.rstrip('/')}/clips")
    if not parts:
        raise RunNotFound(f"{out}: no clips/part-*.parquet; is this a vidcap output folder?")
    tables = []
    for path in parts:
        with fs.open_input_file(path) as f:
            tables.append(pq.read_table(f, columns=columns))
    return pa.concat_tables(tables)


def read_summary(out: str) -> dict[str, Any] | None:
    """``OUT/summary.json`` as a dict, or None when the run wrote none (still running, crashed)."""
    fs, root = filesystem_for(out)
    try:
        with fs.open_input_stream(f"{root.rstrip('/')}/summary.json") as f:
            return json.loads(f.read())
    except FileNotFoundError:
        return None


def file_stem(video_id: str) -> str:
    """A filesystem-safe, collision-free file stem for a video id.

    Safe ids are kept as they are; any other id gets its unsafe characters replaced and a short
    hash of the original appended, so two ids never map to one file.
    """
    if _SAFE_NAME.fullmatch(video_id) and not video_id.endswith("."):
        return video_id
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "_", video_id).strip("._")[:80] or "video"
    return f"{cleaned}-{hashlib.sha1(video_id.encode()).hexdigest()[:8]}"


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _lines(text: str) -> list[str]:
    """Cue text as non-empty lines (a blank line would end the cue)."""
    return [
        line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n") if line.strip()
    ]


def srt_text(text: str) -> str:
    return "\n".join(line.replace("-->", "->") for line in _lines(text))


def vtt_text(text: str) -> str:
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "\n".join(_lines(escaped))


def to_srt(rows: list[dict[str, Any]]) -> str:
    cues = [
        f"{n}\n{_timestamp(r['start_s'], ',')} --> {_timestamp(r['end_s'], ',')}\n"
        f"{srt_text(r['text'])}\n"
        for n, r in enumerate(rows, 1)
    ]
    return "\n".join(cues)


def to_vtt(rows: list[dict[str, Any]]) -> str:
    cues = [
        f"clip-{r['clip_index']}-{n}\n"
        f"{_timestamp(r['start_s'], '.')} --> {_timestamp(r['end_s'], '.')}\n"
        f"{vtt_text(r['text'])}\n"
        for n, r in enumerate(rows, 1)
    ]
    return "\n".join(["WEBVTT\n", *cues])


def to_jsonl(rows: list[dict[str, Any]]) -> str:
    return "".join(
        json.dumps({k: r[k] for k in JSONL_FIELDS}, ensure_ascii=False) + "\n" for r in rows
    )


_WRITERS = {"srt": to_srt, "vtt": to_vtt, "jsonl": to_jsonl}


def captioned_rows(
    table: pa.Table, prompt_index: int | None = None
) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """(video_id, its successful rows with text, ordered by clip start) for each video;
    only the rows of one prompt when ``prompt_index`` is given."""
    by_video: dict[str, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        if row["error_code"] or row["clip_index"] < 0 or not srt_text(row["text"]):
            continue
        if prompt_index is not None and row["prompt_index"] != prompt_index:
            continue
        by_video.setdefault(row["video_id"], []).append(row)
    for video_id in sorted(by_video):
        rows = by_video[video_id]
        rows.sort(key=lambda r: (r["start_s"], r["clip_index"], r["prompt_index"]))
        yield video_id, rows


def export(
    out: str, fmt: str, dest: str | None = None, prompt_index: int | None = None
) -> list[str]:
    """Write one ``<video>.<fmt>`` file per video with text; return the paths written."""
    if fmt not in _WRITERS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    columns = sorted({*JSONL_FIELDS, "error_code"})
    table = read_clips(out, columns)
    dest = dest or f"{out.rstrip('/')}/export/{fmt}"
    fs, root = filesystem_for(dest)
    fs.create_dir(root, recursive=True)
    written = []
    for video_id, rows in captioned_rows(table, prompt_index):
        path = f"{root.rstrip('/')}/{file_stem(video_id)}.{fmt}"
        with fs.open_output_stream(path) as f:
            f.write(_WRITERS[fmt](rows).encode())
        written.append(path)
    return written
