"""The writer commits whole videos only, once each; the output folder is the ledger."""

from __future__ import annotations

import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from pipelines.core.config import JobConfig
from pipelines.core.errors import ErrorCode
from pipelines.core.faults import quarantine_code
from pipelines.core.keys import row_key, video_keys
from pipelines.core.output import COLUMNS, ShardWriter, committed_video_keys
from pipelines.offline.ledger.attempts import AttemptLog
from pipelines.offline.ledger.resume import RunConflict, prepare_output
from pipelines.offline.ledger.stall import MonitorState

FS = pafs.LocalFileSystem()


def row(
    video: str,
    clip: int,
    last: bool = False,
    error: str = "",
    *,
    ask: int = 0,
    video_rows: int | None = None,
    attempt: int = 1,
) -> dict:
    """A row as the LM stage hands it to the writer; ``last`` rows say how many rows the
    video has (by default one per clip up to this one)."""
    base = {name: None for name, _, _ in COLUMNS}
    base.update(
        video_id=video,
        source=f"/{video}.mp4",
        clip_index=clip,
        start_s=0.0,
        end_s=1.0,
        frame_ts_s=[0.5],
        partial=False,
        prompt=f"p{ask}",
        prompt_index=ask,
        task="caption",
        text="" if error else f"{video}{clip}",
        model_id="m",
        model_revision="",
        prompt_tokens=3,
        output_tokens=0 if error else 2,
        decode_s=0.1,
        encode_s=0.1,
        generate_s=0.1,
        error_code=error,
        error_message="x" if error else "",
        error_stage="decode" if error else "",
        video_key=f"k-{video}",
        row_key=f"r-{video}-{clip}-{ask}",
        last=last,
        video_rows=(clip + 1 if video_rows is None else video_rows) if last else 0,
        attempt=attempt,
    )
    return base


def read_rows(out) -> list[tuple]:
    table = pq.read_table(f"{out}/clips")
    return sorted(
        zip(
            table.column("video_id").to_pylist(),
            table.column("clip_index").to_pylist(),
            strict=True,
        )
    )


def test_only_complete_videos_are_committed_in_any_arrival_order(tmp_path):
    w = ShardWriter(str(tmp_path), FS, "m", session="s1", commit_interval_s=0)
    w.add([row("a", 1, last=True), row("b", 0)])
    assert committed_video_keys(FS, str(tmp_path)) == set()  # a lacks clip 0, b its last
    w.add([row("a", 0)])
    assert committed_video_keys(FS, str(tmp_path)) == {"k-a"}
    w.add([row("b", 1, last=True), row("a", 0)])  # a re-sent by a retried task: ignored
    summary = w.close(inputs=2)
    assert read_rows(tmp_path) == [("a", 0), ("a", 1), ("b", 0), ("b", 1)]
    assert (summary.rows, summary.clips, summary.processed) == (4, 4, 2)


def test_later_decode_attempt_replaces_rows_of_one_that_died(tmp_path):
    w = ShardWriter(str(tmp_path), FS, "m", session="s1", commit_interval_s=0)
    w.add([row("q", 0, attempt=1), row("q", 1, attempt=1)])  # then attempt 1's worker died
    w.add([row("q", -1, last=True, error="worker_crash", video_rows=1, attempt=3)])
    w.add([row("q", 2, last=True, attempt=2)])  # a late row of an older attempt: dropped
    summary = w.close(inputs=1)
    assert read_rows(tmp_path) == [("q", -1)]
    assert summary.errors_by_code == {"worker_crash": 1}


def test_video_completes_when_every_ask_of_every_clip_arrived(tmp_path):
    w = ShardWriter(str(tmp_path), FS, "m", session="s1", commit_interval_s=0)
    # 2 clips x 3 asks; the last clip's rows say 6 rows in all.
    w.add([row("v", 1, last=True, ask=a, video_rows=6) for a in range(3)])
    w.add([row("v", 0, ask=0), row("v", 0, ask=2)])
    assert committed_video_keys(FS, str(tmp_path)) == set()
    w.add([row("v", 0, ask=1)])
    assert committed_video_keys(FS, str(tmp_path)) == {"k-v"}
    summary = w.close(inputs=1)
    assert (summary.rows, summary.clips) == (6, 2)
    table = pq.read_table(f"{tmp_path}/clips")
    pairs = zip(table["clip_index"].to_pylist(), table["prompt_index"].to_pylist(), strict=True)
    assert sorted(pairs) == [(c, a) for c in range(2) for a in range(3)]


def test_unfinished_video_is_never_written(tmp_path):
    w = ShardWriter(str(tmp_path), FS, "m", session="s1", commit_interval_s=0)
    w.add([row("a", 0), row("b", 0, last=True)])
    assert w.incomplete_videos == 1
    w.commit()
    assert committed_video_keys(FS, str(tmp_path)) == {"k-b"}
    (tmp_path / "clips" / ".part-x.parquet.tmp").write_bytes(b"half")  # a crashed write
    assert committed_video_keys(FS, str(tmp_path)) == {"k-b"}


def test_run_settings_conflict_and_overwrite(tmp_path):
    out = str(tmp_path / "o")
    base = dict(inputs=["x"], out=out)
    key = prepare_output(FS, out, JobConfig(**base))
    assert prepare_output(FS, out, JobConfig(**base)) == key  # same settings: resume
    with pytest.raises(RunConflict, match=r"different settings \(prompts\).*--overwrite"):
        prepare_output(FS, out, JobConfig(**base, prompts=["Other prompt"]))
    (tmp_path / "o" / "clips").mkdir()
    other = prepare_output(FS, out, JobConfig(**base, prompts=["Other prompt"], overwrite=True))
    assert other != key and not (tmp_path / "o" / "clips").exists()


def test_keys_are_stable_and_track_content_changes(tmp_path):
    f = tmp_path / "v.mp4"
    f.write_bytes(b"one")
    k1 = video_keys([str(f)])
    assert video_keys([str(f)]) == k1
    assert video_keys([str(tmp_path / "missing.mp4")]) == video_keys(
        [str(tmp_path / "missing.mp4")]
    )
    c1 = video_keys([str(f)], "content")
    f.write_bytes(b"two")
    assert video_keys([str(f)], "content") != c1
    assert row_key("k", 0, 0, "p", "r") != row_key("k", 1, 0, "p", "r")
    assert row_key("k", 0, 0, "p", "r") != row_key("k", 0, 1, "p", "r")


def test_attempt_log_charges_the_video_in_progress_with_its_reason():
    monitor = MonitorState()
    log = AttemptLog(monitor)
    first = log.start_unit(["a", "b", "c"])
    assert (first.attempt, first.deaths) == (1, {})
    log.working_on(0)
    log.working_on(1)
    log.reason("timeout")  # the worker dies on b
    again = log.start_unit(["a", "b", "c"])
    assert again.attempt == 2 and set(again.deaths) == {"b"}
    assert (again.deaths["b"].count, again.deaths["b"].reasons) == (1, {"timeout"})
    assert quarantine_code(again.deaths["b"].reasons) is ErrorCode.DECODE_TIMEOUT
    assert quarantine_code(set()) is ErrorCode.WORKER_CRASH
    # A new session (a new monitor) starts every video at zero.
    assert AttemptLog(MonitorState()).start_unit(["a", "b", "c"]).deaths == {}
    assert monitor.retry_count() == 1


def test_finished_units_leave_no_state_in_the_monitor():
    monitor = MonitorState()
    log = AttemptLog(monitor)
    for i in range(1000):
        log.start_unit([f"v{i}"])
        log.working_on(0)
        log.finish_unit()
    assert monitor.units == {} and monitor.deaths == {} and monitor.retry_count() == 0


def test_identical_files_keep_distinct_keys(tmp_path):
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    a.write_bytes(b"same")
    b.write_bytes(b"same")
    ka, kb = video_keys([str(a), str(b)], "content")
    assert ka != kb and video_keys([str(a), str(b)], "content") == [ka, kb]


def test_videos_whose_keys_share_a_long_prefix_are_both_committed(tmp_path):
    w = ShardWriter(str(tmp_path), FS, "m", session="s1", commit_interval_s=0)
    a, b = row("a", 0, last=True), row("b", 0, last=True)
    a["video_key"], b["video_key"] = "0" * 31 + "1", "0" * 31 + "2"
    w.add([a, b])
    summary = w.close(inputs=2)
    assert summary.processed == 2 and read_rows(tmp_path) == [("a", 0), ("b", 0)]
