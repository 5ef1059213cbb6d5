"""The speech-recognition pass: audio decode tasks -> ASR actors -> ``transcripts/`` shards.

It runs before the caption pass, because a clip's prompt holds the speech of its time range
and that needs the video's whole transcript. Its output is committed like ``clips/`` (complete
videos only, tmp + rename, the committed shards are the ledger): a rerun transcribes only
what no earlier run committed, and the caption pass reads its work from the committed
transcripts (each row carries its video's plan row), so the driver never holds per-video
state beyond the videos in flight.

Every video of the pass gets exactly one row: ``transcribed`` (segments, maybe none),
``subtitles`` (``auto`` and the video has subtitles: no speech recognition needed), or
``error`` (``no_audio_stream``, ``corrupt``, a quarantine, ...). A failed transcript never
stops the video from being captioned: it is captioned without speech.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import ray

from pipelines.core.keys import KeySet, as_fixed
from pipelines.core.output import VideoParts, committed_keyset, committed_shards, write_shard
from pipelines.core.records import (
    Segment,
    segments_from_json,
    segments_to_json,
)
from pipelines.stages.audio import FAILED, TRANSCRIBED

TRANSCRIPTS_SCHEMA_VERSION = "1.0"
SEGMENT_TYPE = pa.struct(
    [("start_s", pa.float64()), ("end_s", pa.float64()), ("text", pa.string())]
)
# name, type, description: the README's transcripts table is generated from this list.
TRANSCRIPT_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("video_id", pa.string(), "Input video id, as in `clips/`."),
    ("source", pa.string(), "Path or URI the video was read from."),
    ("video_key", pa.string(), "The video's work key, as in `clips/`."),
    (
        "status",
        pa.string(),
        "`transcribed`, `subtitles` (had subtitles: not transcribed) or `error`.",
    ),
    ("language", pa.string(), "Language the model used (given, or detected); empty if none."),
    ("segments", pa.list_(SEGMENT_TYPE), "Recognized speech, seconds on the clips' clock."),
    ("text", pa.string(), "The segments' text, one per line."),
    ("audio_s", pa.float64(), "Seconds of audio transcribed."),
    ("windows", pa.int32(), "Audio windows the model ran on."),
    ("asr_s", pa.float64(), "Speech-recognition seconds (batch time / batch size, summed)."),
    ("model_id", pa.string(), "Speech-recognition checkpoint."),
    ("error_code", pa.string(), "Empty unless `status` is `error`: an ErrorCode value."),
    ("error_message", pa.string(), "Human-readable reason; empty on success."),
    ("asks", pa.string(), "The video's plan row: its asks (JSON), read by the caption pass."),
    ("subtitles", pa.string(), "The video's plan row: manifest subtitles file, '' when none."),
    ("context", pa.string(), "The video's plan row: manifest context, '' when none."),
]
TRANSCRIPT_SCHEMA = pa.schema(
    [pa.field(n, t) for n, t, _ in TRANSCRIPT_COLUMNS],
    metadata={"vidcap.transcripts_schema_version": TRANSCRIPTS_SCHEMA_VERSION},
)
_TASK_FIELDS = ("video_id", "source", "asks", "video_key", "subtitles", "context")


# -- the driver's writer ------------------------------------------------------------------


class TranscriptWriter:
    """Commits complete videos' transcripts as shards under ``out/transcripts``."""

    def __init__(
        self,
        fs: pafs.FileSystem,
        out: str,
        session: str,
        model_id: str,
        rows_per_shard: int,
        commit_interval_s: float = 30.0,
    ) -> None:
        self.fs, self.folder = fs, f"{out.rstrip('/')}/transcripts"
        self.session, self.model_id, self.rows_per_shard = session, model_id, rows_per_shard
        self.commit_interval_s = commit_interval_s
        self._last_commit = time.monotonic()
        self._videos = VideoParts()  # parts: window index; attempts: audio decode attempts
        self._pending: list[dict] = []
        self._shard = 0
        self.counts: Counter[str] = Counter()
        fs.create_dir(self.folder, recursive=True)

    def add(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            key, part, attempt = row["video_key"], int(row["index"]), int(row["attempt"])
            if pieces := self._videos.add(key, part, row, attempt, int(row["chunks"])):
                self._complete(pieces)
        # Like clips: a crash loses at most a shard's worth or an interval's worth of work.
        if (
            len(self._pending) >= self.rows_per_shard
            or time.monotonic() - self._last_commit >= self.commit_interval_s
        ):
            self.commit()

    def _complete(self, pieces: list[dict[str, Any]]) -> None:
        first = pieces[0]
        failed = next((p for p in pieces if p["status"] == FAILED or p["error_code"]), None)
        segments = [s for p in pieces for s in segments_from_json(str(p["segments"]))]
        languages = Counter(str(p["language"]) for p in pieces if p["language"])
        status = FAILED if failed is not None else str(first["status"])
        audio = [p for p in pieces if int(p["index"]) >= 0]
        row = {name: first[name] for name in _TASK_FIELDS}
        row.update(
            status=status,
            language=languages.most_common(1)[0][0] if languages else "",
            segments=[{"start_s": s.start_s, "end_s": s.end_s, "text": s.text} for s in segments],
            text="\n".join(s.text for s in segments),
            audio_s=max((float(p["end_s"]) for p in audio), default=0.0),
            windows=len(audio),
            asr_s=sum(float(p["asr_s"]) for p in audio),
            model_id=self.model_id,
            error_code=str(failed["error_code"]) if failed is not None else "",
            error_message=str(failed["error_message"]) if failed is not None else "",
        )
        self._pending.append(row)
        self.counts[status] += 1
        self.counts["audio_s"] += row["audio_s"]
        if failed is not None:
            self.counts[f"error:{row['error_code']}"] += 1

    def commit(self) -> None:
        self._last_commit = time.monotonic()
        if not self._pending:
            return
        name = f"part-{self.session}-{self._shard:05d}.parquet"
        table = pa.Table.from_pylist(self._pending, TRANSCRIPT_SCHEMA)
        write_shard(self.fs, self.folder, name, table)
        self._shard, self._pending = self._shard + 1, []

    @property
    def incomplete_videos(self) -> int:
        return self._videos.incomplete


# -- from committed transcripts to the caption pass's work --------------------------------


def committed_transcripts(fs: pafs.FileSystem, out: str) -> list[str]:
    return committed_shards(fs, f"{out.rstrip('/')}/transcripts")


def transcript_keyset(fs: pafs.FileSystem, out: str) -> KeySet:
    """The videos whose transcripts are committed (a rerun does not transcribe them again)."""
    return committed_keyset(fs, f"{out.rstrip('/')}/transcripts")


def without_keys(batch: pa.Table, keys: KeySet | ray.ObjectRef | None) -> pa.Table:
    """The rows whose ``video_key`` is not in ``keys`` (what is left to transcribe)."""
    keyset = ray.get(keys) if isinstance(keys, ray.ObjectRef) else keys
    if keyset is None or not len(keyset):
        return batch
    known = keyset.contains(as_fixed(batch.column("video_key")))
    return batch.filter(pa.array(~known))


def caption_tasks(batch: pa.Table, todo: KeySet | ray.ObjectRef) -> pa.Table:
    """Committed transcript rows of videos left to caption, as caption-pass task rows (the
    plan row plus the transcript's segments as JSON)."""
    keyset: KeySet = ray.get(todo) if isinstance(todo, ray.ObjectRef) else todo
    batch = batch.filter(pa.array(keyset.contains(as_fixed(batch.column("video_key")))))
    segments = [
        segments_to_json([Segment(s["start_s"], s["end_s"], s["text"]) for s in video or ()])
        for video in batch.column("segments").to_pylist()
    ]
    columns = {name: batch.column(name) for name in _TASK_FIELDS}
    return pa.table({**columns, "transcript": pa.array(segments, pa.string())})


def keyset_of(ds: ray.data.Dataset) -> KeySet:
    """The ``video_key`` values of a dataset (32 bytes each on the driver)."""
    parts = [
        b.column("video_key")
        for b in ds.select_columns(["video_key"]).iter_batches(
            batch_size=None, batch_format="pyarrow"
        )
    ]
    return KeySet.from_arrays(parts)


def pass_summary(writer: TranscriptWriter, wall_s: float) -> dict[str, Any]:
    c = writer.counts
    return {
        "transcribed": c[TRANSCRIBED],
        "with_subtitles": c["subtitles"],
        "errors": {k.split(":", 1)[1]: v for k, v in sorted(c.items()) if k.startswith("error:")},
        "audio_s": round(c["audio_s"], 3),
        "wall_s": round(wall_s, 3),
    }
