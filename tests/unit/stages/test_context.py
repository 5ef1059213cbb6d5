"""A clip's prompt holds its own speech (subtitles or transcript) and the video's context."""

from __future__ import annotations

import pytest
from safetensors.torch import load as load_tensors
from transformers import AutoTokenizer

from pipelines.core.config import (
    ContextConfig,
    DecodeConfig,
    GenerationConfig,
    ModelConfig,
    PoolConfig,
)
from pipelines.core.records import Ask, Clip, EncodedClip, Segment, VideoTask, segments_to_json
from pipelines.media import synth
from pipelines.models.base import GenRequest
from pipelines.stages.context import render_prompt
from pipelines.stages.decode import DecodeStage
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GenerateStage
from pipelines.stages.speech import VideoSpeech

SRT = """1
00:00:00,500 --> 00:00:02,000
Hello from the first clip.

2
00:00:06,000 --> 00:00:07,500
The second clip speaks.

3
00:00:11,000 --> 00:00:12,000
Third clip only.
"""
DECODE = DecodeConfig(clip_s=5.0, fps=1.0, min_frames=2, max_frames=4, max_side_px=64)


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    root = tmp_path_factory.mktemp("ctx")
    path = root / "talk.mp4"
    synth.write_video(path, seconds=15.0, fps=5.0, width=64, height=48)
    (root / "talk.srt").write_text(SRT)
    other = root / "other.srt"
    other.write_text("1\n00:00:01,000 --> 00:00:03,000\nFrom the manifest file.\n")
    return path, other


def _clips(task: VideoTask, context: ContextConfig) -> list[Clip]:
    return list(DecodeStage(DECODE, context=context).iter_outputs(task))


def test_each_clip_carries_exactly_its_own_cues(video):
    path, _ = video
    clips = _clips(VideoTask.with_prompt("v", str(path), "Describe."), ContextConfig())
    assert [c.ref.speech for c in clips] == [
        "Hello from the first clip.",
        "The second clip speaks.",
        "Third clip only.",
    ]
    assert {c.ref.context_source for c in clips} == {"subtitles"}


def test_manifest_subtitles_file_wins_over_the_sidecar_and_context_is_recorded(video):
    path, other = video
    task = VideoTask("v", str(path), (Ask("Describe."),), subtitles=str(other), context="A talk")
    clips = _clips(task, ContextConfig())
    assert [c.ref.speech for c in clips] == ["From the manifest file.", "", ""]
    assert [c.ref.context_source for c in clips] == [
        "subtitles,manifest",
        "manifest",
        "manifest",
    ]
    assert {c.ref.video_context for c in clips} == {"A talk"}


def test_source_switch(video):
    path, _ = video
    transcript = segments_to_json([Segment(5.5, 6.5, "recognized words")])
    task = VideoTask("v", str(path), (Ask("Describe."),), transcript=transcript)
    # auto: the video's subtitles come first; transcript: the segments; none: nothing.
    assert _clips(task, ContextConfig(source="auto"))[1].ref.speech == "The second clip speaks."
    by_asr = _clips(task, ContextConfig(source="transcript"))
    assert [c.ref.speech for c in by_asr] == ["", "recognized words", ""]
    assert by_asr[1].ref.context_source == "transcript"
    assert {c.ref.speech for c in _clips(task, ContextConfig(source="none"))} == {""}
    assert {c.ref.speech for c in _clips(task, ContextConfig(max_tokens=0))} == {""}


def test_auto_falls_back_to_the_transcript_without_subtitles(tmp_path):
    path = tmp_path / "quiet.mp4"
    synth.write_video(path, seconds=6.0, fps=5.0, width=64, height=48)
    transcript = segments_to_json([Segment(0.0, 1.0, "only asr")])
    speech = VideoSpeech.of(
        VideoTask("v", str(path), (), transcript=transcript), ContextConfig(), DECODE
    )
    assert speech.source == "transcript" and speech.for_clip(0, 5) == ("only asr", "transcript")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir("qwen2_vl"))


def test_render_appends_blocks_or_fills_placeholders(tokenizer):
    cfg = ContextConfig()
    plain = render_prompt("Describe.", "", "", cfg, tokenizer)
    assert (plain.prompt, plain.context, plain.context_tokens, plain.cut_tokens) == (
        "Describe.",
        "",
        0,
        0,
    )
    both = render_prompt("Describe.", "hi there", "A cooking show", cfg, tokenizer)
    assert both.prompt == (
        "Describe.\n\nAbout this video: A cooking show\n\nSpeech during this clip:\nhi there"
    )
    assert both.context == "A cooking show\nhi there" and both.cut_tokens == 0
    placed = render_prompt("Said: {speech}. {x} Describe.", "hi there", "", cfg, tokenizer)
    assert placed.prompt == "Said: hi there. {x} Describe."


def test_budget_cut_is_recorded(tokenizer):
    speech = " ".join(f"word{i}" for i in range(200))
    full = len(tokenizer(speech, add_special_tokens=False)["input_ids"])
    cut = render_prompt("Describe.", speech, "", ContextConfig(max_tokens=10), tokenizer)
    assert cut.cut_tokens == full - 10
    kept = cut.prompt.split("Speech during this clip:\n", 1)[1]
    assert speech.startswith(kept) and len(tokenizer(kept)["input_ids"]) <= 10


def test_generate_stage_prompts_with_the_clip_speech(video, tiny_model_dir):
    """Token-level: the stage's text equals generating the rendered prompt directly."""
    path, _ = video
    model = ModelConfig(model=tiny_model_dir("qwen2_vl"))
    clips = _clips(VideoTask.with_prompt("v", str(path), "Describe."), ContextConfig())
    encode = EncodeStage(model, PoolConfig(batch_size=4))
    encode.setup()
    encoded: list[EncodedClip] = encode(clips)
    settings = GenerationConfig(max_new_tokens=5)
    generate = GenerateStage(model, PoolConfig(batch_size=4), settings, ContextConfig())
    generate.setup()
    with_speech = generate(encoded)
    bare = GenerateStage(model, PoolConfig(batch_size=4), settings, ContextConfig(max_tokens=0))
    bare.family = generate.family
    without = bare(encoded)
    for clip, out, plain in zip(encoded, with_speech, without, strict=True):
        prompt = f"Describe.\n\nSpeech during this clip:\n{clip.ref.speech}"
        (direct,) = generate.family.generate(
            [GenRequest(load_tensors(clip.encoded), prompt)], settings
        )
        assert out.text == direct.text and out.prompt_tokens == direct.prompt_tokens
        assert out.context == clip.ref.speech and out.context_cut_tokens == 0
        assert out.prompt_tokens > plain.prompt_tokens and plain.context == ""
