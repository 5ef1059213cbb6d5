"""What every family's split-vs-fused test needs: a random clip and the two loaded halves."""

from __future__ import annotations

import numpy as np

from pipelines.config import ModelConfig
from pipelines.models.base import VideoLMFamily


def random_video(seed: int, frames: int = 4, h: int = 112, w: int = 112) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(frames, h, w, 3), dtype=np.uint8)


def load_halves(cls: type[VideoLMFamily], path: str) -> tuple[VideoLMFamily, VideoLMFamily]:
    """The encoder half and the LM half, each loaded as its own actor would load it."""
    enc, lm = cls(ModelConfig(model=path)), cls(ModelConfig(model=path))
    enc.load_encoder()
    lm.load_lm()
    return enc, lm
