"""Video summaries: one prompt when the captions fit, map-reduce when they do not."""

from __future__ import annotations

import pytest

from pipelines.core.config import ModelConfig, PoolConfig, SummaryConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.offline.summaries import video_captions
from pipelines.stages.summarize import Line, SummarizeStage, VideoCaptions, clock


class RecordingSummarize(SummarizeStage):
    """The real stage, keeping every prompt it sends to the model."""

    def setup(self):
        super().setup()
        self.prompts: list[str] = []
        real = self.family.generate_text

        def recording(prompts, settings):
            self.prompts += prompts
            return real(prompts, settings)

        self.family.generate_text = recording


def stage_for(model_dir: str, **summary) -> RecordingSummarize:
    stage = RecordingSummarize(
        ModelConfig(model=model_dir), PoolConfig(batch_size=4), SummaryConfig(**summary)
    )
    stage.setup()
    return stage


def captions(n: int, source: str = "/nowhere/v.mp4") -> VideoCaptions:
    lines = tuple(
        Line(10.0 * i, 10.0 * (i + 1), f"caption number {i} says a red ball rolls")
        for i in range(n)
    )
    return VideoCaptions("v", source, "k", lines)


def test_short_video_is_one_call_with_every_caption(tiny_model_dir):
    stage = stage_for(tiny_model_dir("qwen2_vl"), max_new_tokens=8)
    [out] = stage([captions(3)])
    assert not isinstance(out, StageError)
    assert (out.lm_calls, out.levels) == (1, 0)
    assert out.output_tokens >= 1 and out.text
    [prompt] = stage.prompts
    for i in range(3):
        assert f"[{clock(10 * i)}-{clock(10 * i + 10)}] caption number {i} " in prompt


def test_long_video_is_summarized_in_parts_that_fit_then_reduced(tiny_model_dir):
    stage = stage_for(tiny_model_dir("qwen2_vl"), max_new_tokens=8, context_tokens=400)
    video = captions(40)
    [out] = stage([video])
    assert not isinstance(out, StageError)
    assert out.levels >= 1 and out.lm_calls >= 3
    budget = 400 - 8
    assert out.max_prompt_tokens <= budget
    first_level = [p for p in stage.prompts if "part of a video" in p]
    # Map: every caption line is in exactly one first-level part, whole (no truncation).
    for line in video.captions:
        assert sum(line.render() in p for p in first_level) == 1
    assert len(stage.prompts) == out.lm_calls
    assert "summary of the whole video" in stage.prompts[-1]


def test_a_line_longer_than_the_budget_is_cut_not_dropped(tiny_model_dir):
    stage = stage_for(tiny_model_dir("qwen2_vl"), max_new_tokens=8, context_tokens=300)
    long_text = " ".join(f"w{i}" for i in range(400))
    video = VideoCaptions("v", "/x.mp4", "k", (Line(0.0, 10.0, long_text),))
    [out] = stage([video])
    assert not isinstance(out, StageError) and out.levels >= 1
    first_level = [p for p in stage.prompts if "part of a video" in p]
    joined = "".join(first_level)
    assert all(f"w{i}" in joined for i in (0, 199, 399))


def test_transcript_lines_join_the_captions(tiny_model_dir, tmp_path):
    video_path = tmp_path / "talk.mp4"
    (tmp_path / "talk.srt").write_text(
        "1\n00:00:05,000 --> 00:00:07,000\nHello there\n\n2\n00:00:15,000 --> 00:00:16,000\nBye\n"
    )
    stage = stage_for(tiny_model_dir("qwen2_vl"), max_new_tokens=8)
    [out] = stage([captions(2, str(video_path))])
    assert out.transcript_cues == 2
    [prompt] = stage.prompts
    assert "[00:05-00:07] (speech) Hello there" in prompt
    # Time order: caption 0 (0-10 s), speech at 5 s, caption 1 (10-20 s), speech at 15 s.
    order = [prompt.index(s) for s in ("number 0", "Hello there", "number 1", "Bye")]
    assert order == sorted(order)


def test_budget_too_small_for_two_summaries_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="cannot hold two"):
        stage_for(tiny_model_dir("qwen2_vl"), max_new_tokens=200, context_tokens=256)


def test_models_without_a_chat_template_cannot_summarize(tiny_model_dir):
    with pytest.raises(ValueError, match="no chat template"):
        stage_for(tiny_model_dir("blip-2"))


def test_videos_without_captions_get_a_typed_error():
    import pyarrow as pa

    rows = [
        dict(video_id="a", source="/a", video_key="ka", start_s=0.0, end_s=10.0, task="caption",
             prompt_index=0, text="", error_code="corrupt"),
        dict(video_id="b", source="/b", video_key="kb", start_s=10.0, end_s=20.0, task="caption",
             prompt_index=0, text="second", error_code=""),
        dict(video_id="b", source="/b", video_key="kb", start_s=0.0, end_s=10.0, task="caption",
             prompt_index=0, text="first", error_code=""),
        dict(video_id="b", source="/b", video_key="kb", start_s=0.0, end_s=10.0, task="qa",
             prompt_index=1, text="an answer", error_code=""),
    ]  # fmt: skip
    a, b = video_captions(pa.Table.from_pylist(rows))
    assert a[1].code is ErrorCode.NO_CAPTIONS and "corrupt" in a[1].message
    assert [line.text for line in b.captions] == ["first", "second"]  # time order, no QA


@pytest.fixture(scope="module")
def text_lm_dir(tmp_path_factory):
    from pipelines.models.text_lm import build_tiny_text_lm

    return str(build_tiny_text_lm(tmp_path_factory.mktemp("text-lm")))


def test_a_text_chat_model_can_write_the_summaries(tiny_model_dir, text_lm_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pipelines.models.text_lm import TextLM

    stage = stage_for(
        tiny_model_dir("qwen2_vl"), max_new_tokens=8, model=ModelConfig(model=text_lm_dir)
    )
    assert isinstance(stage.family, TextLM)
    [out] = stage([captions(3)])
    assert not isinstance(out, StageError) and out.lm_calls == 1
    # Token-level: the same as the checkpoint's own generate on its chat template.
    tok = AutoTokenizer.from_pretrained(text_lm_dir)
    model = AutoModelForCausalLM.from_pretrained(text_lm_dir).eval()
    messages = [{"role": "user", "content": [{"type": "text", "text": stage.prompts[0]}]}]
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt")
    ids = ids["input_ids"] if not isinstance(ids, torch.Tensor) else ids
    with torch.inference_mode():
        ref = model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1] :].tolist()
    eos = model.generation_config.eos_token_id
    ref = ref[: ref.index(eos)] if eos in ref else ref
    [again] = stage.family.generate_text([stage.prompts[0]], stage.settings)
    assert list(again.token_ids) == ref and out.prompt_tokens == ids.shape[1]
