"""Offline job with the video's text: subtitles, manifest context and speech recognition."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from pipelines.core.config import JobConfig
from pipelines.core.output import COLUMNS
from pipelines.media import synth, synth_audio
from pipelines.media.subtitles import Cue, cues_in
from pipelines.models.whisper import build_tiny_whisper
from pipelines.offline.job import run_job
from pipelines.offline.transcripts import TRANSCRIPT_COLUMNS

SRT = """1
00:00:00,500 --> 00:00:02,000
Welcome to the kitchen.

2
00:00:06,000 --> 00:00:07,000
Now we stir.
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("context-corpus")
    synth.write_video(root / "talk.mp4", seconds=10.0, fps=5.0, width=64, height=48)
    (root / "talk.srt").write_text(SRT)
    synth.write_video(root / "titled.mp4", seconds=4.0, fps=5.0, width=64, height=48)
    (root / "titled-subs.vtt").write_text("WEBVTT\n\n00:00.000 --> 00:01.500\nFrom a VTT.\n")
    synth_audio.write_video_with_audio(
        root / "speech.mp4", tones=((4.0, 300.0), (5.0, 900.0)), width=64, height=48
    )
    synth.write_video(root / "quiet.mp4", seconds=3.0, fps=5.0, width=64, height=48)
    (root / "manifest.csv").write_text(
        "path,video_id,subtitles,context\n"
        "talk.mp4,talk,,\n"
        "titled.mp4,titled,titled-subs.vtt,A cooking show\n"
        "speech.mp4,speech,,\n"
        "quiet.mp4,quiet,,\n"
    )
    return root


@pytest.fixture(scope="module")
def whisper(tmp_path_factory):
    return str(build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper"))


@pytest.fixture(scope="module")
def job(ray_session, corpus, tiny_model_dir, whisper, tmp_path_factory):
    out = tmp_path_factory.mktemp("context-out")
    config = JobConfig(
        inputs=[str(corpus / "manifest.csv")],
        out=str(out),
        prompts=["Describe."],
        model={"model": tiny_model_dir("qwen2_vl")},
        decode={"clip_s": 5.0, "fps": 1.0, "min_frames": 4, "max_frames": 4, "max_side_px": 64},
        generation={"max_new_tokens": 3},
        asr={"model": {"model": whisper}, "pool": {"batch_size": 4}, "max_new_tokens": 12},
    )
    summary = run_job(config)
    rows = pq.read_table(out / "clips").sort_by(
        [("video_id", "ascending"), ("clip_index", "ascending")]
    )
    transcripts = pq.read_table(out / "transcripts")
    return config, summary, rows.to_pylist(), {r["video_id"]: r for r in transcripts.to_pylist()}


def test_every_video_has_one_transcript_row_saying_what_happened(job):
    _, summary, _, transcripts = job
    assert sorted(transcripts) == ["quiet", "speech", "talk", "titled"]
    assert {v: t["status"] for v, t in transcripts.items()} == {
        "talk": "subtitles",
        "titled": "subtitles",
        "speech": "transcribed",
        "quiet": "error",
    }
    assert transcripts["quiet"]["error_code"] == "no_audio_stream"
    speech = transcripts["speech"]
    assert speech["windows"] == 1 and speech["audio_s"] == pytest.approx(9.0, abs=0.1)
    assert speech["model_id"].endswith("tiny-whisper")
    assert summary.transcripts["transcribed"] == 1
    assert summary.transcripts["with_subtitles"] == 2
    assert summary.transcripts["errors"] == {"no_audio_stream": 1}
    assert set(next(iter(transcripts.values()))) == {name for name, _, _ in TRANSCRIPT_COLUMNS}


def test_clip_prompts_hold_their_own_text(job):
    _, _, rows, transcripts = job
    by = {(r["video_id"], r["clip_index"]): r for r in rows}
    assert set(rows[0]) == {name for name, _, _ in COLUMNS}
    assert [by["talk", i]["context"] for i in (0, 1)] == [
        "Welcome to the kitchen.",
        "Now we stir.",
    ]
    assert {by["talk", i]["context_source"] for i in (0, 1)} == {"subtitles"}
    assert by["titled", 0]["context"] == "A cooking show\nFrom a VTT."
    assert by["titled", 0]["context_source"] == "subtitles,manifest"
    assert by["quiet", 0]["context"] == "" and by["quiet", 0]["error_code"] == ""
    # The recognized speech, clip by clip: exactly the segments overlapping each clip.
    cues = [Cue(s["start_s"], s["end_s"], s["text"]) for s in transcripts["speech"]["segments"]]
    for i in (0, 1):
        row = by["speech", i]
        own = cues_in(cues, row["start_s"], row["end_s"])
        assert row["context"] == own
        assert row["context_source"] == ("transcript" if own else "")
    for r in rows:
        assert r["context_cut_tokens"] == 0
        assert (r["context_tokens"] > 0) == bool(r["context"])


def test_rerun_transcribes_nothing_again(job):
    config, _, rows, _ = job
    again = run_job(config)
    assert again.skipped_done == 4 and again.rows == 0 and again.transcripts == {}
    assert len(pq.read_table(f"{config.out}/clips")) == len(rows)
