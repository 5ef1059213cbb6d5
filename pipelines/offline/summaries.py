"""The ``--summarize`` phase: committed clip captions -> ``videos/`` (one summary per video).

It runs after the caption phase, over what ``clips/`` holds, so it resumes the same way:
videos whose summary row is committed are skipped, and a summary row is only written
whole. It is a second pass rather than a stage fused behind the LM so that a video's
summary sees every one of its captions (they arrive in any order) and so that ``clips/``
stays valid on its own when summaries are not wanted or fail.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import defaultdict
from typing import Any

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data

from pipelines.core.config import JobConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.output import committed_keys, committed_shards, write_atomic, write_shard
from pipelines.core.paths import filesystem_for
from pipelines.core.records import Segment, segments_to_json
from pipelines.offline.ray_data import apply_map
from pipelines.offline.transcripts import committed_transcripts
from pipelines.stages.summarize import (
    CAPTIONS_ROW_SCHEMA,
    Line,
    SummarizeStage,
    VideoCaptions,
    captions_row,
)

log = logging.getLogger(__name__)

VIDEO_COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("video_id", pa.string(), "Input video id, as in `clips/`."),
    ("source", pa.string(), "Path or URI of the video."),
    ("video_key", pa.string(), "Work identity, as in `clips/` (join key)."),
    ("summary", pa.string(), "Summary of the whole video; empty on error."),
    ("captions", pa.int32(), "Caption rows the summary was written from."),
    ("transcript_cues", pa.int32(), "Subtitle cues added as speech lines (0: none found)."),
    ("lm_calls", pa.int32(), "Language-model calls made (1 when everything fit one prompt)."),
    ("levels", pa.int32(), "Map-reduce levels below the final prompt (0: no split needed)."),
    ("max_prompt_tokens", pa.int32(), "Longest prompt of any call, in tokens (within budget)."),
    ("prompt_tokens", pa.int32(), "Prompt tokens over all calls."),
    ("output_tokens", pa.int32(), "Generated tokens over all calls."),
    ("summarize_s", pa.float64(), "Seconds spent on this video's summary."),
    ("model_id", pa.string(), "Model that wrote the summary."),
    ("error_code", pa.string(), "Empty on success, else an ErrorCode value."),
    ("error_message", pa.string(), "Why there is no summary; empty on success."),
]
VIDEO_SCHEMA = pa.schema([pa.field(n, t) for n, t, _ in VIDEO_COLUMNS])


def video_captions(table: pa.Table) -> list[VideoCaptions | tuple[VideoCaptions, StageError]]:
    """Group clip rows per video: its caption lines in time order, or why it has none."""
    rows = table.to_pylist()
    by_video: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_video[row["video_key"]].append(row)
    out: list[VideoCaptions | tuple[VideoCaptions, StageError]] = []
    for key, video_rows in by_video.items():
        ok = [
            r
            for r in video_rows
            if r["task"] == "caption" and not r["error_code"] and r["text"].strip()
        ]
        ok.sort(key=lambda r: (r["start_s"], r["prompt_index"]))
        first = video_rows[0]
        video = VideoCaptions(
            first["video_id"],
            first["source"],
            key,
            tuple(Line(r["start_s"], r["end_s"], r["text"].strip()) for r in ok),
        )
        if ok:
            out.append(video)
            continue
        codes = sorted({r["error_code"] for r in video_rows if r["error_code"]})
        reason = f"its clip rows failed ({', '.join(codes)})" if codes else "no caption prompt"
        out.append(
            (
                video,
                StageError(ErrorCode.NO_CAPTIONS, f"nothing to summarize: {reason}", "summarize"),
            )
        )
    return out


# -- the Ray Data steps --------------------------------------------------------------------

READ_COLUMNS = [
    "video_id",
    "source",
    "video_key",
    "start_s",
    "end_s",
    "task",
    "prompt_index",
    "text",
    "error_code",
]


def _transcripts_of(fs: pafs.FileSystem, out: str, keys: list[str]) -> dict[str, str]:
    """The committed transcripts (segments JSON) of these videos, when the ASR pass ran."""
    shards = committed_transcripts(fs, out)
    if not keys or not shards:
        return {}
    data = pads.dataset(shards, filesystem=fs, format="parquet")
    found = data.to_table(
        columns=["video_key", "segments"], filter=pads.field("video_key").isin(keys)
    )
    return {
        key: segments_to_json([Segment(s["start_s"], s["end_s"], s["text"]) for s in segs or ()])
        for key, segs in zip(
            found.column("video_key").to_pylist(), found.column("segments").to_pylist(), strict=True
        )
    }


def _videos_of_shard(batch: dict[str, Any], out_uri: str, done: set[str]) -> pa.Table:
    """Committed clips shards -> one row per video not yet summarized.

    The writer commits whole videos per shard, so a shard alone holds all of a video's
    captions: reading shard by shard keeps memory bounded and spreads over the cluster.
    """
    fs, out_path = filesystem_for(out_uri)
    rows = []
    for path in batch["shard"]:
        with fs.open_input_file(str(path)) as f:
            table = pq.read_table(f, columns=READ_COLUMNS)
        for item in video_captions(table):
            video, error = item if isinstance(item, tuple) else (item, None)
            if video.video_key not in done:
                rows.append(captions_row(video, error))
    transcripts = _transcripts_of(fs, out_path, [r["video_key"] for r in rows])
    for r in rows:
        r["transcript"] = transcripts.get(r["video_key"], "")
    return pa.Table.from_pylist(rows, schema=CAPTIONS_ROW_SCHEMA)


def _prepare(fs: pafs.FileSystem, out: str, config: JobConfig) -> None:
    """Summaries made with other settings are derived data: drop them and write anew."""
    settings = {"model": config.model.model, "summary": config.summarize.model_dump()}
    marker = f"{out}/videos/_settings.json"  # "_": not read as data
    if fs.get_file_info(marker).type == pafs.FileType.File:
        with fs.open_input_stream(marker) as f:
            if json.loads(f.read()) == settings:
                return
        log.warning("summary settings changed: rewriting %s/videos", out)
        fs.delete_dir_contents(f"{out}/videos")
    fs.create_dir(f"{out}/videos", recursive=True)
    write_atomic(fs, marker, json.dumps(settings, indent=2).encode())


def run_summaries(config: JobConfig, lm_pool) -> dict[str, int]:
    """Summarize every video of ``config.out`` not summarized yet; return counts."""
    assert config.summarize is not None
    fs, out = filesystem_for(config.out)
    out = out.rstrip("/")
    _prepare(fs, out, config)
    shards = committed_shards(fs, f"{out}/clips")
    done = committed_keys(fs, f"{out}/videos")
    counts = {"videos_summarized": 0, "summary_errors": 0, "summaries_skipped_done": len(done)}
    if not shards:
        return counts
    stage = SummarizeStage(config.model, lm_pool, config.summarize)
    ds = ray.data.from_items([{"shard": path} for path in shards])
    ds = ds.map_batches(
        _videos_of_shard,
        fn_kwargs={"out_uri": config.out, "done": done},
        batch_size=1,
        batch_format="numpy",
        num_cpus=config.decode_cpus,
    )
    ds = apply_map(ds, stage, min_actors=lm_pool.min_actors, max_actors=lm_pool.max_actors)
    model_id = (config.summarize.model or config.model).model
    session = uuid.uuid4().hex[:12]
    shard = 0
    pending: list[dict] = []
    last_commit = time.monotonic()

    def commit() -> None:
        nonlocal shard, pending, last_commit
        last_commit = time.monotonic()
        if not pending:
            return
        name = f"part-{session}-{shard:05d}.parquet"
        write_shard(fs, f"{out}/videos", name, pa.Table.from_pylist(pending, VIDEO_SCHEMA))
        shard, pending = shard + 1, []

    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
        for row in batch.to_pylist():
            row = {**row, "captions": row["caption_lines"], "model_id": model_id}
            row = {name: row[name] for name, _, _ in VIDEO_COLUMNS}
            pending.append(row)
            counts["summary_errors" if row["error_code"] else "videos_summarized"] += 1
        if (
            len(pending) >= config.rows_per_shard
            or time.monotonic() - last_commit >= config.commit_interval_s
        ):
            commit()
    commit()
    return counts
