"""Frame rules come from the model family's SamplingHints (pipelines/offline/job.py check_sampling)."""

from __future__ import annotations

import pytest

from pipelines.core.config import DecodeConfig
from pipelines.models.hints import check_sampling
from pipelines.models.qwen2_vl import QwenVL
from pipelines.models.vision_encoder_decoder import VisionEncoderDecoder


def test_explicit_settings_the_family_cannot_take_are_refused():
    hints = QwenVL.hints  # frame pairs, at least 4 frames
    with pytest.raises(ValueError, match="qwen2_vl needs frame counts in multiples of 2"):
        check_sampling(DecodeConfig(frame_factor=3), hints, "qwen2_vl")
    with pytest.raises(ValueError, match="qwen2_vl needs at least 4 frames per clip"):
        check_sampling(DecodeConfig(min_frames=2), hints, "qwen2_vl")
    ok = DecodeConfig(frame_factor=4, min_frames=6)
    assert check_sampling(ok, hints, "qwen2_vl") == ok


def test_a_family_without_frame_rules_takes_any_count():
    decode = DecodeConfig(frame_factor=3, min_frames=1)
    assert check_sampling(decode, VisionEncoderDecoder.hints, "vision-encoder-decoder") == decode


def test_an_unset_frame_factor_becomes_the_familys_and_is_validated():
    # How a config with frame_factor=None ("the family's") reaches check_sampling.
    unset = DecodeConfig.model_construct(**{**DecodeConfig().model_dump(), "frame_factor": None})
    resolved = check_sampling(unset, QwenVL.hints, "qwen2_vl")
    assert resolved.frame_factor == 2 and resolved == DecodeConfig(frame_factor=2)
    small = DecodeConfig.model_construct(
        **{
            **DecodeConfig(max_frames=1, min_frames=1, frame_factor=1).model_dump(),
            "frame_factor": None,
        }
    )
    with pytest.raises(ValueError, match="max_frames=1 is below frame_factor=2"):
        check_sampling(small, QwenVL.hints, "qwen2_vl")
