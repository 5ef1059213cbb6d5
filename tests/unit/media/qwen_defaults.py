"""The decode settings as a Qwen2-VL job resolves them: the defaults with frames in pairs.

``DecodeConfig.frame_factor`` defaults to None, "the model family's"; these tests pin the
media layer's exact frame counts under the rule the default model (Qwen2-VL) imposes.
"""

from __future__ import annotations

from pipelines.core.config import DecodeConfig


def qwen_decode(**overrides) -> DecodeConfig:
    return DecodeConfig(**{"frame_factor": 2, **overrides})
