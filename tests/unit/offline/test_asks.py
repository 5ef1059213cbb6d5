"""Several prompts and questions per clip: one encoding per clip, one row per ask.

The Ray Data adapter's row functions are called directly (no Ray): decode -> encode ->
generate exactly as the actors run them.
"""

from __future__ import annotations

import pytest

from pipelines.core.config import DecodeConfig, GenerationConfig, ModelConfig, PoolConfig
from pipelines.core.errors import ErrorCode
from pipelines.core.records import Ask, EncodedClip, VideoTask, asks_from_json, numbered
from pipelines.media import synth
from pipelines.offline.ray_data import fan_out_rows, map_rows
from pipelines.stages.decode import DecodeStage
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GenerateStage

PROMPTS = ("Describe.", "What moves?", "Which colours?", "How many objects?")


class CountingEncode(EncodeStage):
    """The real encoder stage, counting the clips it encodes."""

    encoded_clips = 0

    def process_batch(self, items, **options):
        self.encoded_clips += len(items)
        return super().process_batch(items, **options)


@pytest.fixture(scope="module")
def stages(tiny_model_dir):
    model = ModelConfig(model=tiny_model_dir("qwen2_vl"))
    encode = CountingEncode(model, PoolConfig(batch_size=2))
    generate = GenerateStage(model, PoolConfig(batch_size=3), GenerationConfig(max_new_tokens=5))
    encode.setup()
    generate.setup()
    return encode, generate


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("v") / "v.mp4"
    synth.write_video(path, seconds=25.0, fps=10.0, width=96, height=64, pattern="moving")
    return str(path)


def ask_of(row: dict) -> Ask:
    (ask,) = asks_from_json(row["asks"])
    return ask


def run_rows(task: VideoTask, encode, generate) -> list[dict]:
    decode = DecodeStage(DecodeConfig(clip_s=10.0))
    rows = list(fan_out_rows(decode, VideoTask.from_row(task.to_row())))
    return map_rows(generate, map_rows(encode, rows))


def test_encoder_runs_once_per_clip_whatever_the_number_of_prompts(stages, video):
    encode, generate = stages
    for prompts in (PROMPTS[:1], PROMPTS):
        encode.encoded_clips = 0
        task = VideoTask("v", video, numbered([Ask(p) for p in prompts]))
        rows = run_rows(task, encode, generate)
        assert encode.encoded_clips == 3  # 25 s in 10 s clips
        assert len(rows) == 3 * len(prompts)
        assert not any(r["error_code"] for r in rows)


def test_each_prompt_row_equals_generating_that_prompt_alone(stages, video):
    encode, generate = stages
    task = VideoTask("v", video, numbered([Ask(p) for p in PROMPTS]))
    rows = run_rows(task, encode, generate)
    got = {(r["clip_index"], ask_of(r).index): r["text"] for r in rows}
    decode = DecodeStage(DecodeConfig(clip_s=10.0))
    for clip in decode.iter_outputs(task):
        [enc] = encode([clip])
        for ask in task.asks:
            [alone] = generate([EncodedClip(clip.ref.for_ask(ask), enc.encoded)])
            assert got[(clip.ref.clip_index, ask.index)] == alone.text
    # Different prompts of one clip see the same video but are different requests.
    clip0 = [r for r in rows if r["clip_index"] == 0]
    assert len({r["prompt_tokens"] for r in clip0}) > 1


def test_ranged_questions_ask_only_their_clips_and_unmatched_ones_get_a_row(stages, video):
    encode, generate = stages
    asks = numbered(
        [
            Ask("Describe."),
            Ask("Who enters?", "qa", 12.0, 14.0),  # inside clip 1 only
            Ask("Then?", "qa", 9.0, 21.0),  # overlaps clips 0, 1 and 2
            Ask("After the end?", "qa", 100.0, 110.0),
        ]
    )
    rows = run_rows(VideoTask("v", video, asks), encode, generate)
    got = sorted((r["clip_index"], ask_of(r).index, r["error_code"]) for r in rows)
    assert got == [
        (-1, 3, ErrorCode.OUT_OF_RANGE.value),
        (0, 0, ""),
        (0, 2, ""),
        (1, 0, ""),
        (1, 1, ""),
        (1, 2, ""),
        (2, 0, ""),
        (2, 2, ""),
    ]
    # The final row tells the writer the video's row count.
    [last] = [r for r in rows if r["last"]]
    assert last["video_rows"] == len(rows)


def test_a_video_only_asked_about_one_range_skips_encoding_other_clips(stages, video):
    encode, generate = stages
    encode.encoded_clips = 0
    task = VideoTask("v", video, numbered([Ask("Who enters?", "qa", 12.0, 14.0)]))
    rows = run_rows(task, encode, generate)
    assert encode.encoded_clips == 1
    assert [(r["clip_index"], r["start_s"], r["end_s"]) for r in rows] == [(1, 10.0, 20.0)]


def test_failed_video_gives_one_error_row_per_ask(stages, tmp_path):
    encode, generate = stages
    missing = str(tmp_path / "gone.mp4")
    task = VideoTask("g", missing, numbered([Ask(p) for p in PROMPTS[:3]]))
    rows = run_rows(task, encode, generate)
    assert [(r["clip_index"], r["error_code"]) for r in rows] == [(-1, "not_found")] * 3
    assert rows[-1]["last"] and rows[-1]["video_rows"] == 3
