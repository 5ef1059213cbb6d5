"""The transcript writer commits each video once, complete, whatever order and retries bring."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.keys import KeySet
from pipelines.core.records import Ask, AudioChunk, Segment, VideoTask, segments_to_json
from pipelines.offline.transcripts import (
    TRANSCRIPT_SCHEMA,
    TranscriptWriter,
    caption_tasks,
    transcript_keyset,
    without_keys,
)
from pipelines.stages.audio import FAILED, SUBTITLES, AudioPiece, piece_row

KEY_A, KEY_B = "a" * 32, "b" * 32


def _task(key: str) -> VideoTask:
    return VideoTask(f"v-{key[0]}", f"/{key[0]}.mp4", (Ask("Describe."),), key, context="t")


def _window(key: str, index: int, chunks: int, attempt: int, text: str) -> dict:
    chunk = AudioChunk(key, index, index * 25.0, index * 25.0 + 30, 0, 0, np.zeros(4, np.float32))
    row = piece_row(AudioPiece(_task(key), chunk, chunks=chunks, attempt=attempt))
    row["segments"] = segments_to_json([Segment(index * 25.0, index * 25.0 + 1, text)])
    row["language"] = "en"
    return row


def test_a_video_is_written_once_complete_and_a_retry_replaces_a_dead_attempt(tmp_path):
    fs = pafs.LocalFileSystem()
    writer = TranscriptWriter(fs, str(tmp_path), "s1", "tiny-whisper", rows_per_shard=100)
    # Attempt 1 died after its first window; attempt 2 sends both windows, last one first.
    writer.add([_window(KEY_A, 0, 0, 1, "dead attempt")])
    writer.add([_window(KEY_A, 1, 2, 2, "second"), _window(KEY_A, 0, 0, 2, "first")])
    writer.add([_window(KEY_A, 0, 0, 1, "late row of the dead attempt")])
    failed = piece_row(
        AudioPiece(
            _task(KEY_B),
            None,
            FAILED,
            StageError(ErrorCode.NO_AUDIO_STREAM, "no audio", "audio"),
            chunks=1,
        )
    )
    writer.add([failed])
    writer.commit()
    assert writer.incomplete_videos == 0
    table = pq.read_table(tmp_path / "transcripts")
    assert table.schema.metadata == TRANSCRIPT_SCHEMA.metadata
    rows = {r["video_key"]: r for r in table.to_pylist()}
    assert rows[KEY_A]["text"] == "first\nsecond"
    assert rows[KEY_A]["status"] == "transcribed" and rows[KEY_A]["windows"] == 2
    assert rows[KEY_A]["audio_s"] == 55.0 and rows[KEY_A]["language"] == "en"
    assert rows[KEY_B]["status"] == "error" and rows[KEY_B]["error_code"] == "no_audio_stream"
    assert writer.counts["transcribed"] == 1 and writer.counts["error:no_audio_stream"] == 1
    assert len(transcript_keyset(fs, str(tmp_path))) == 2


def test_committed_transcripts_become_caption_tasks_of_what_is_left(tmp_path):
    fs = pafs.LocalFileSystem()
    writer = TranscriptWriter(fs, str(tmp_path), "s1", "m", rows_per_shard=1)
    writer.add([_window(KEY_A, 0, 1, 1, "hello")])
    writer.add([piece_row(AudioPiece(_task(KEY_B), None, SUBTITLES, chunks=1))])
    table = pq.read_table(tmp_path / "transcripts")
    keys = KeySet(np.array([KEY_A.encode()], dtype="S32"))
    assert without_keys(table, keys).column("video_key").to_pylist() == [KEY_B]
    tasks = caption_tasks(table, keys)
    (row,) = tasks.to_pylist()
    task = VideoTask.from_row(row)
    assert task.video_key == KEY_A and task.context == "t" and task.asks == (Ask("Describe."),)
    assert task.transcript == segments_to_json([Segment(0.0, 1.0, "hello")])
    assert isinstance(tasks, pa.Table)
