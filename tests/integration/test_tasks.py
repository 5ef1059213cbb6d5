"""Tasks beyond one caption, on a local Ray: several prompts, VideoQA, summaries, resume."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from pipelines.core.config import JobConfig
from pipelines.media import synth
from pipelines.offline.job import run_job

PROMPTS = ["Describe.", "What moves?"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("qa-corpus")
    synth.write_video(root / "a.mp4", seconds=25.0, fps=10.0, width=96, height=64, pattern="moving")
    synth.write_video(root / "b.mp4", seconds=12.0, fps=10.0, width=64, height=64)
    (root / "b.srt").write_text("1\n00:00:01,000 --> 00:00:03,000\nWelcome to the demo\n")
    synth.write_random_bytes(root / "bad.mp4")
    rows = [
        {"path": "a.mp4", "question": "Who enters?", "start_s": 12.0, "end_s": 14.0},
        {"path": "a.mp4", "question": "What happens at the end?", "start_s": 20.0, "end_s": 25.0},
        {"path": "a.mp4", "question": "And later?", "start_s": 60.0, "end_s": 70.0},
        {"path": "b.mp4"},
        {"path": "bad.mp4"},
    ]
    (root / "m.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return root


@pytest.fixture(scope="module")
def job(ray_session, corpus, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("tasks-out")
    config = JobConfig(
        inputs=[str(corpus / "m.jsonl")],
        out=str(out),
        prompts=PROMPTS,
        model={"model": tiny_model_dir("qwen2_vl")},
        generation={"max_new_tokens": 5},
        summarize={"max_new_tokens": 8},
        commit_interval_s=0,
    )
    summary = run_job(config)
    clips = pq.read_table(out / "clips").to_pylist()
    videos = pq.read_table(out / "videos").to_pylist()
    return config, summary, clips, videos, out


def test_rows_per_clip_and_ask_with_typed_out_of_range(job):
    _, _, clips, _, _ = job
    got = sorted(
        (r["source"].rsplit("/", 1)[1], r["clip_index"], r["prompt_index"], r["task"],
         r["start_s"], r["end_s"], r["error_code"])
        for r in clips
    )  # fmt: skip
    assert got == [
        ("a.mp4", -1, 2, "qa", 0.0, 0.0, "out_of_range"),
        ("a.mp4", 1, 0, "qa", 10.0, 20.0, ""),  # a's own asks: the manifest's questions
        ("a.mp4", 2, 1, "qa", 20.0, 25.0, ""),
        ("b.mp4", 0, 0, "caption", 0.0, 10.0, ""),  # b: the job's two prompts
        ("b.mp4", 0, 1, "caption", 0.0, 10.0, ""),
        ("b.mp4", 1, 0, "caption", 10.0, 12.0, ""),
        ("b.mp4", 1, 1, "caption", 10.0, 12.0, ""),
        ("bad.mp4", -1, 0, "caption", 0.0, 0.0, "corrupt"),
        ("bad.mp4", -1, 1, "caption", 0.0, 0.0, "corrupt"),
    ]
    by_prompt = {(r["source"][-5:], r["prompt_index"]): r["prompt"] for r in clips}
    assert by_prompt[("b.mp4", 1)] == "What moves?"
    assert by_prompt[("a.mp4", 0)] == "Who enters?"
    assert len({r["row_key"] for r in clips}) == len(clips)


def test_one_summary_row_per_video(job):
    config, summary, _, videos, _ = job
    got = {r["source"].rsplit("/", 1)[1]: r for r in videos}
    assert sorted(got) == ["a.mp4", "b.mp4", "bad.mp4"]
    b = got["b.mp4"]
    assert b["summary"] and b["error_code"] == ""
    assert (b["captions"], b["transcript_cues"], b["lm_calls"], b["levels"]) == (4, 1, 1, 0)
    assert b["model_id"] == config.model.model
    # a was only asked questions, bad never decoded: neither has a caption to summarize.
    assert got["a.mp4"]["error_code"] == got["bad.mp4"]["error_code"] == "no_captions"
    assert (summary.videos_summarized, summary.summary_errors) == (1, 2)


def test_rerun_skips_committed_clips_and_summaries(job):
    config, _, clips, videos, out = job
    again = run_job(config)
    assert again.skipped_done == 3 and again.processed == 0
    assert again.summaries_skipped_done == 3 and again.videos_summarized == 0
    assert pq.read_table(out / "clips").num_rows == len(clips)
    assert pq.read_table(out / "videos").num_rows == len(videos)
