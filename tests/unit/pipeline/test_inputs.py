from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.inputs import InputError, default_asks, expand_inputs, video_id_for
from pipelines.records import Ask

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
