"""The offline job end to end on a local Ray: exact rows, typed errors, nothing lost."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from pipelines.core.config import JobConfig
from pipelines.core.errors import StageError
from pipelines.core.output import COLUMNS, SCHEMA_VERSION
from pipelines.core.records import Clip, FailedClip, VideoTask
from pipelines.media import synth
from pipelines.offline.job import run_job
from pipelines.stages.decode import DecodeStage
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GenerateStage


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    synth.write_video(
        root / "long.mp4", seconds=25.0, fps=10.0, width=96, height=64, pattern="moving"
    )
    synth.write_video(root / "short.mkv", seconds=3.0, fps=24.0, width=64, height=64)
    synth.write_zero_bytes(root / "zero.mp4")
    synth.write_random_bytes(root / "random.mp4")
    synth.write_audio_only(root / "audio.mp4")
    manifest = root / "manifest.csv"
    manifest.write_text(
        "path,video_id,prompt\n"
        "long.mp4,long,What moves?\n"
        "short.mkv,short,\n"
        "zero.mp4,zero,\n"
        "random.mp4,random,\n"
        "audio.mp4,audio,\n"
        "gone.mp4,gone,\n"
    )
    return root


@pytest.fixture(scope="module")
def job(ray_session, corpus, tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    config = JobConfig(
        inputs=[str(corpus / "manifest.csv")],
        out=str(out),
        prompts=["Describe."],
        model={"model": tiny_model_dir("qwen2_vl")},
        generation={"max_new_tokens": 6},
        encoder={"batch_size": 2},
        lm={"batch_size": 3},
    )
    summary = run_job(config)
    table = pq.read_table(out / "clips").sort_by(
        [("video_id", "ascending"), ("clip_index", "ascending")]
    )
    return config, summary, table, out


def test_every_input_appears_with_exact_clips_and_error_codes(job):
    _, _, table, _ = job
    rows = [
        (r["video_id"], r["clip_index"], r["start_s"], r["end_s"], r["error_code"])
        for r in table.to_pylist()
    ]
    assert rows == [
        ("audio", -1, 0.0, 0.0, "no_video_stream"),
        ("gone", -1, 0.0, 0.0, "not_found"),
        ("long", 0, 0.0, 10.0, ""),
        ("long", 1, 10.0, 20.0, ""),
        ("long", 2, 20.0, 25.0, ""),
        ("random", -1, 0.0, 0.0, "corrupt"),
        ("short", 0, 0.0, 3.0, ""),
        ("zero", -1, 0.0, 0.0, "empty"),
    ]


def test_clip_rows_carry_text_tokens_timings_and_pts(job):
    config, _, table, _ = job
    ok = [r for r in table.to_pylist() if not r["error_code"]]
    for r in ok:
        assert r["text"] and 1 <= r["output_tokens"] <= 6
        assert r["prompt_tokens"] > 10
        assert r["model_id"] == config.model.model
        assert r["decode_s"] > 0 and r["encode_s"] > 0 and r["generate_s"] > 0
        ts = r["frame_ts_s"]
        assert len(ts) >= 4 and len(ts) % 2 == 0
        assert all(r["start_s"] <= t < r["end_s"] for t in ts) and ts == sorted(ts)
    long0 = next(r for r in ok if r["video_id"] == "long" and r["clip_index"] == 0)
    assert long0["prompt"] == "What moves?"
    assert len(long0["frame_ts_s"]) == 20  # 10 s at 2 fps
    short = next(r for r in ok if r["video_id"] == "short")
    assert short["prompt"] == "Describe."


def test_error_rows_are_complete(job):
    _, _, table, _ = job
    for r in table.to_pylist():
        if r["error_code"]:
            assert r["error_stage"] == "decode" and r["error_message"]
            assert r["text"] == "" and r["output_tokens"] == 0


def test_schema_and_summary(job):
    _, summary, table, out = job
    assert table.schema.names == [c[0] for c in COLUMNS]
    meta = pq.read_schema(next((out / "clips").glob("part-*.parquet"))).metadata
    assert meta[b"vidcap.schema_version"] == SCHEMA_VERSION.encode()
    data = json.loads((out / "summary.json").read_text())
    assert data["inputs"] == 6 and data["clips"] == 4 and data["rows"] == 8
    assert data["errors_by_code"] == {
        "corrupt": 1,
        "empty": 1,
        "no_video_stream": 1,
        "not_found": 1,
    }
    assert data["videos_with_text"] == 2 and data["schema_version"] == SCHEMA_VERSION
    assert summary.output_tokens == sum(table.column("output_tokens").to_pylist())
    assert not list((out / "clips").glob(".*tmp"))


def test_ray_job_text_equals_stages_called_directly(job, corpus):
    """The Ray adapter must not reorder or mix rows: same text as calling the stages."""
    config, _, table, _ = job
    decode = DecodeStage(config.decode)
    encode = EncodeStage(config.model, config.encoder)
    generate = GenerateStage(config.model, config.lm, config.generation)
    encode.setup()
    generate.setup()
    expected = {}
    for vid, name, prompt in [
        ("long", "long.mp4", "What moves?"),
        ("short", "short.mkv", "Describe."),
    ]:
        clips = [
            c for c in decode.iter_outputs(VideoTask.with_prompt(vid, str(corpus / name), prompt))
        ]
        assert not any(isinstance(c, FailedClip) for c in clips)
        for clip in clips:
            assert isinstance(clip, Clip)
            [enc] = encode([clip])
            [cap] = generate([enc])
            assert not isinstance(cap, StageError)
            expected[(vid, clip.ref.clip_index)] = cap.text
    got = {
        (r["video_id"], r["clip_index"]): r["text"]
        for r in table.to_pylist()
        if not r["error_code"]
    }
    assert got == expected


def test_cli_reports_usage_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "caption",
            str(tmp_path),
            "--out",
            str(tmp_path / "o"),
            "--fps",
            "2",
            "--num-frames",
            "8",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "--fps and --num-frames are exclusive" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_refuses_unsupported_model_before_starting_ray(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    (tmp_path / "v.mp4").write_bytes(b"")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "caption",
            str(tmp_path / "v.mp4"),
            "--out",
            str(tmp_path / "o"),
            "--model",
            str(tmp_path / "gpt2"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    from pipelines.models import supported_model_types

    supported = ", ".join(supported_model_types())
    assert f"'gpt2' is not supported; supported: {supported}" in proc.stderr
