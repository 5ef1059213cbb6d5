"""Corpus scale at a modest size: 3,000 manifest rows whose files are missing, plus a few
real videos; exact counts (never times), and a rerun that skips everything."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipelines.core.config import JobConfig
from pipelines.media import synth
from pipelines.offline.job import run_job

N_MISSING = 3000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    for i in range(3):
        synth.write_video(root / f"real{i}.mp4", seconds=1.0, fps=4.0, width=32, height=32)
    lines = ["path,video_id"]
    lines += [f"gone/v{i:05d}.mp4,missing-{i:05d}" for i in range(N_MISSING)]
    lines += [f"real{i}.mp4,real-{i}" for i in range(3)]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    return root


def test_thousands_of_missing_inputs_are_typed_rows_and_a_rerun_skips_them(
    ray_session, corpus, tiny_model_dir, tmp_path
):
    config = JobConfig(
        inputs=[str(corpus / "manifest.csv")],
        out=str(tmp_path / "out"),
        prompts=["Describe.", "List objects."],
        model={"model": tiny_model_dir("qwen2_vl")},
        generation={"max_new_tokens": 2},
        commit_interval_s=0,
        rows_per_shard=700,
    )
    summary = run_job(config)
    table = pq.read_table(tmp_path / "out" / "clips")
    rows = table.to_pylist()
    assert len(rows) == (N_MISSING + 3) * 2 == summary.rows
    missing = [r for r in rows if r["video_id"].startswith("missing-")]
    assert len(missing) == 2 * N_MISSING
    assert {(r["error_code"], r["clip_index"], r["error_stage"]) for r in missing} == {
        ("not_found", -1, "decode")
    }
    assert {r["prompt_index"] for r in missing} == {0, 1}
    assert missing[0]["error_message"].endswith(": no such file")
    real = sorted(
        (r["video_id"], r["prompt_index"]) for r in rows if r["video_id"].startswith("real")
    )
    assert real == [(f"real-{i}", p) for i in range(3) for p in (0, 1)]
    assert not any(r["error_code"] for r in rows if r["video_id"].startswith("real"))
    assert len({r["row_key"] for r in rows}) == len(rows)
    assert summary.errors_by_code == {"not_found": 2 * N_MISSING}
    assert (summary.inputs, summary.processed, summary.skipped_done) == (
        N_MISSING + 3,
        N_MISSING + 3,
        0,
    )

    again = run_job(config)
    assert (again.inputs, again.skipped_done, again.processed, again.rows) == (
        N_MISSING + 3,
        N_MISSING + 3,
        0,
        0,
    )
    assert pq.read_table(tmp_path / "out" / "clips").num_rows == len(rows)


def test_keys_in_ray_tasks_equal_keys_on_the_driver(ray_session, corpus, tmp_path):
    """The two places a plan is keyed (``keying``) give the same table and counts."""
    import numpy as np
    import pyarrow as pa

    from pipelines.core.keys import KeySet
    from pipelines.offline.inputs import default_asks, plan_inputs
    from pipelines.offline.keying import key_in_tasks, key_on_driver

    plan = plan_inputs([str(corpus / "manifest.csv")], default_asks(["Describe."]))
    plan = plan.append_column("order", pa.array(np.arange(plan.num_rows, dtype=np.int64)))
    config = JobConfig(inputs=["x"], out=str(tmp_path / "out"))
    first = key_on_driver(config, plan, KeySet(np.empty(0, dtype="S32")))
    # Committed: one real video and 100 missing files.
    keys = pa.concat_tables(first.chunks).column("video_key")
    done = [keys[N_MISSING].as_py(), *keys[:100].to_pylist()]
    committed = KeySet(np.array(sorted(k.encode() for k in done), dtype="S32"))

    driver = key_on_driver(config, plan, committed)
    tasks = key_in_tasks(config, plan, committed)

    assert (driver.todo, driver.missing) == (tasks.todo, tasks.missing) == (2, N_MISSING - 100)
    assert driver.todo_bytes == tasks.todo_bytes > 0
    by_order = pa.concat_tables(driver.chunks).sort_by("order")
    assert tasks.dataset.to_arrow_refs() and by_order.equals(
        pa.concat_tables(ray_session.get(tasks.dataset.to_arrow_refs())).sort_by("order")
    )


def test_content_keys_keep_identical_files_apart_and_resume_both(
    ray_session, tiny_model_dir, tmp_path
):
    for name in ("a.mp4", "copy-of-a.mp4"):
        synth.write_video(tmp_path / name, seconds=1.0, fps=4.0, width=32, height=32)
    config = JobConfig(
        inputs=[str(tmp_path / "a.mp4"), str(tmp_path / "copy-of-a.mp4")],
        out=str(tmp_path / "out"),
        model={"model": tiny_model_dir("qwen2_vl")},
        generation={"max_new_tokens": 2},
        video_key="content",
    )
    first = run_job(config)
    rows = pq.read_table(tmp_path / "out" / "clips").to_pylist()
    assert sorted(r["source"].rsplit("/", 1)[1] for r in rows) == ["a.mp4", "copy-of-a.mp4"]
    assert len({r["video_key"] for r in rows}) == 2 and first.processed == 2
    again = run_job(config)
    assert (again.skipped_done, again.processed) == (2, 0)


def test_odd_inputs_are_one_typed_row_each_and_the_job_succeeds(
    ray_session, tiny_model_dir, tmp_path
):
    """A FIFO (never opened: it would block), a folder named .mp4, a symlink loop and
    URL-ish manifest rows: one typed row each, no crash, no hang."""
    import os

    odd = tmp_path / "odd"
    odd.mkdir()
    os.mkfifo(odd / "fifo.mp4")
    (odd / "folder.mp4").mkdir()
    (odd / "loop-a.mp4").symlink_to(odd / "loop-b.mp4")
    (odd / "loop-b.mp4").symlink_to(odd / "loop-a.mp4")
    synth.write_video(odd / "good.mp4", seconds=1.0, fps=4.0, width=32, height=32)
    manifest = tmp_path / "odd.csv"
    rows = ["fifo.mp4", "folder.mp4", "loop-a.mp4", "good.mp4"]
    rows += ["https://example.invalid/v.mp4", "foo://bucket/v.mp4"]
    manifest.write_text("path\n" + "\n".join(f"odd/{r}" if "://" not in r else r for r in rows))
    config = JobConfig(
        inputs=[str(manifest)],
        out=str(tmp_path / "out"),
        model={"model": tiny_model_dir("qwen2_vl")},
        generation={"max_new_tokens": 2},
    )
    summary = run_job(config)
    got = {
        r["source"]: (r["error_code"], r["clip_index"])
        for r in pq.read_table(tmp_path / "out" / "clips").to_pylist()
    }
    assert got == {
        str(odd / "fifo.mp4"): ("unreadable", -1),
        str(odd / "folder.mp4"): ("unreadable", -1),
        str(odd / "loop-a.mp4"): ("not_found", -1),
        str(odd / "good.mp4"): ("", 0),
        "https://example.invalid/v.mp4": ("unreadable", -1),
        "foo://bucket/v.mp4": ("unreadable", -1),
    }
    assert summary.inputs == 6 and summary.rows == 6
