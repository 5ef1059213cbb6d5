from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.core.records import Ask
from pipelines.offline.inputs import (
    InputError,
    default_asks,
    expand_inputs,
    plan_inputs,
    video_id_for,
)

PROMPT = "p"
ASKS = default_asks([PROMPT])


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "deep").mkdir()
    for name in ("a/one.mp4", "a/deep/two.MKV", "a/notes.txt", "three.webm"):
        (tmp_path / name).write_bytes(b"x")
    return tmp_path


def test_directory_is_walked_recursively_for_video_extensions(corpus):
    tasks = expand_inputs([str(corpus / "a")], ASKS)
    assert [t.source for t in tasks] == [
        str(corpus / "a" / "deep" / "two.MKV"),
        str(corpus / "a" / "one.mp4"),
    ]
    assert all(t.asks == (Ask(PROMPT),) for t in tasks)


def test_glob_and_explicit_missing_file_and_dedup(corpus):
    missing = str(corpus / "missing.mp4")
    tasks = expand_inputs([str(corpus / "**" / "*.mp4"), missing, str(corpus / "a/one.mp4")], ASKS)
    assert [t.source for t in tasks] == [str(corpus / "a" / "one.mp4"), missing]


def test_file_uri_directory(corpus):
    tasks = expand_inputs([f"file://{corpus}/a"], ASKS)
    assert [t.source for t in tasks] == [
        f"file://{corpus}/a/deep/two.MKV",
        f"file://{corpus}/a/one.mp4",
    ]


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_manifest_with_ids_prompts_and_relative_paths(corpus, fmt):
    rows = [
        {"path": "a/one.mp4", "video_id": "first", "prompt": "What is red?"},
        {"path": str(corpus / "three.webm"), "video_id": "second", "prompt": None},
    ]
    manifest = corpus / f"list.{fmt}"
    if fmt == "csv":
        manifest.write_text(
            f"path,video_id,prompt\na/one.mp4,first,What is red?\n{corpus / 'three.webm'},second,\n"
        )
    elif fmt == "jsonl":
        manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    else:
        pq.write_table(pa.Table.from_pylist(rows), manifest)
    tasks = expand_inputs([str(manifest)], ASKS)
    assert [(t.video_id, t.source, t.asks) for t in tasks] == [
        ("first", str(corpus / "a" / "one.mp4"), (Ask("What is red?"),)),
        ("second", str(corpus / "three.webm"), ASKS),
    ]


def test_manifest_rows_add_prompts_and_ranged_questions_to_their_video(tmp_path):
    manifest = tmp_path / "qa.jsonl"
    rows = [
        {"path": "a.mp4", "question": "Who enters?", "start_s": 10, "end_s": 20},
        {"path": "b.mp4"},
        {"path": "a.mp4", "prompt": "Describe."},
        {"path": "a.mp4", "question": "What colour is the car?"},
    ]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    a, b = expand_inputs([str(manifest)], ASKS)
    assert a.asks == (
        Ask("Who enters?", "qa", 10.0, 20.0, index=0),
        Ask("Describe.", "caption", index=1),
        Ask("What colour is the car?", "qa", index=2),
    )
    assert b.asks == ASKS  # no own rows: the job-wide prompts


@pytest.mark.parametrize(
    ("row", "match"),
    [
        ({"prompt": "x", "question": "y"}, "both a prompt and a question"),
        ({"question": "y", "start_s": 3}, "both start_s and end_s"),
        ({"question": "y", "start_s": 5, "end_s": 2}, "start_s <= end_s"),
        ({"prompt": "x", "start_s": 1, "end_s": 2}, "only apply to a question"),
    ],
)
def test_bad_question_rows_are_refused(tmp_path, row, match):
    manifest = tmp_path / "qa.jsonl"
    manifest.write_text(json.dumps({"path": "a.mp4", **row}) + "\n")
    with pytest.raises(InputError, match=match):
        expand_inputs([str(manifest)], ASKS)


def test_question_ranges_pick_the_clips_they_overlap():
    ranged, point, whole = Ask("q", "qa", 10.0, 20.0), Ask("q", "qa", 5.0, 5.0), Ask("q", "qa")
    assert [ranged.covers(s, s + 10) for s in (0, 10, 20)] == [False, True, False]
    assert [point.covers(s, s + 5) for s in (0, 5)] == [False, True]
    assert whole.covers(100, 110)


def test_manifest_without_path_column_is_refused(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file\nx.mp4\n")
    with pytest.raises(InputError, match="no 'path' column"):
        expand_inputs([str(manifest)], ASKS)


def test_duplicate_video_ids_are_refused(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,video_id\na.mp4,x\nb.mp4,x\n")
    with pytest.raises(InputError, match="appears twice"):
        expand_inputs([str(manifest)], ASKS)


def test_nothing_found_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no video files"):
        expand_inputs([str(tmp_path)], ASKS)


def test_video_id_is_stable_and_readable():
    assert video_id_for("/data/cat.mp4") == video_id_for("/data/cat.mp4")
    assert video_id_for("/data/cat.mp4").startswith("cat-")
    assert video_id_for("/data/cat.mp4") != video_id_for("/other/cat.mp4")


def test_planning_100k_rows_keeps_first_seen_order_and_unique_ids(tmp_path):
    n = 100_000
    manifest = tmp_path / "big.csv"
    lines = ["path"] + [f"v{i % 90_000:06d}.mp4" for i in range(n)]  # 10,000 repeats
    manifest.write_text("\n".join(lines) + "\n")
    plan = plan_inputs([str(manifest)], ASKS)
    sources = plan.column("source").to_pylist()
    assert len(sources) == 90_000 == len(set(sources))
    assert sources[:2] == [str(tmp_path / "v000000.mp4"), str(tmp_path / "v000001.mp4")]
    assert sources[-1] == str(tmp_path / "v089999.mp4")
    ids = plan.column("video_id").to_pylist()
    assert len(set(ids)) == 90_000 and ids[0] == video_id_for(sources[0])


def test_manifest_chunks_keep_asks_of_a_video_together(tmp_path):
    """A video's rows far apart (in different read chunks) still form one video."""
    manifest = tmp_path / "qa.jsonl"
    rows = [{"path": "a.mp4", "question": "First?"}]
    rows += [{"path": f"x{i}.mp4"} for i in range(70_000)]
    rows += [{"path": "a.mp4", "question": "Second?", "start_s": 1, "end_s": 2}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    tasks = expand_inputs([str(manifest)], ASKS)
    assert len(tasks) == 70_001
    assert tasks[0].asks == (
        Ask("First?", "qa", index=0),
        Ask("Second?", "qa", 1.0, 2.0, index=1),
    )


def test_same_question_twice_across_chunks_is_refused(tmp_path):
    manifest = tmp_path / "qa.jsonl"
    rows = [{"path": "a.mp4", "question": "Q?"}] + [{"path": f"x{i}.mp4"} for i in range(70_000)]
    rows += [{"path": "a.mp4", "question": "Q?"}]
    manifest.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(InputError, match="listed twice"):
        expand_inputs([str(manifest)], ASKS)


def test_an_existing_file_with_glob_characters_is_that_file(tmp_path):
    odd = tmp_path / "clip[1].mp4"
    odd.write_bytes(b"x")
    (tmp_path / "clip1.mp4").write_bytes(b"x")  # what the name would match as a glob
    assert [t.source for t in expand_inputs([str(odd)], ASKS)] == [str(odd)]


def test_url_like_rows_are_inputs_not_planning_errors(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path\nhttps://example.invalid/v.mp4\nfoo://bucket/v.mp4\n")
    tasks = expand_inputs([str(manifest)], ASKS)
    assert [t.source for t in tasks] == ["https://example.invalid/v.mp4", "foo://bucket/v.mp4"]


def test_a_walk_keeps_odd_entries_with_video_names_as_inputs(tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.mp4")
    (tmp_path / "folder.mp4").mkdir()
    (tmp_path / "folder.mp4" / "inside.mp4").write_bytes(b"x")
    (tmp_path / "notes.txt").write_bytes(b"x")
    sources = [t.source for t in expand_inputs([str(tmp_path)], ASKS)]
    assert sources == [str(tmp_path / "fifo.mp4"), str(tmp_path / "folder.mp4" / "inside.mp4")]
