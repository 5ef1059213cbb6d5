"""What every family's split-vs-fused test needs: a random clip and the two loaded halves."""

from __future__ import annotations

import numpy as np

from pipelines.core.config import ModelConfig
from pipelines.models.base import VideoLMFamily


def random_video(seed: int, frames: int = 4, h: int = 112, w: int = 112) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(frames, h, w, 3), dtype=np.uint8)


def load_halves(cls: type[VideoLMFamily], path: str) -> tuple[VideoLMFamily, VideoLMFamily]:
    """The encoder half and the LM half, each loaded as its own actor would load it."""
    enc, lm = cls(ModelConfig(model=path)), cls(ModelConfig(model=path))
    enc.load_encoder()
    lm.load_lm()
    return enc, lm


def check_prompt_errors_are_item_errors(enc, lm, clip, prompt: str) -> None:
    """A too-long prompt and one smuggling the video placeholder fail alone, as item errors."""
    from pipelines.core.config import GenerationConfig
    from pipelines.core.errors import ErrorCode, StageError
    from pipelines.models.base import GenRequest

    encoded = enc.encode([clip])[0]
    ok, too_long, placeholder = lm.generate(
        [
            GenRequest(encoded, prompt),
            GenRequest(encoded, "word " * lm.max_positions),
            GenRequest(encoded, f"what is {lm.video_token}?"),
        ],
        GenerationConfig(max_new_tokens=4),
    )
    assert not isinstance(ok, StageError) and ok.token_ids
    assert isinstance(too_long, StageError) and too_long.code is ErrorCode.PROMPT_TOO_LONG
    assert isinstance(placeholder, StageError) and placeholder.code is ErrorCode.MODEL_ERROR
