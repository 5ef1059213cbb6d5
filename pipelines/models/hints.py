"""What a model family asks of the frames it gets, checked against the decode settings."""

from __future__ import annotations

from pipelines.core.config import DecodeConfig
from pipelines.models.base import SamplingHints


def check_sampling(decode: DecodeConfig, hints: SamplingHints, model_type: str) -> DecodeConfig:
    """The frame settings the model gets: an unset (None) ``frame_factor`` becomes the
    family's; explicit settings the model cannot take are refused, not silently changed.

    Use the returned config for decoding and for the run key, so both see the same value.
    """
    if decode.frame_factor is None:
        decode = type(decode).model_validate(
            {**decode.model_dump(), "frame_factor": hints.frame_factor}
        )
    if decode.frame_factor % hints.frame_factor:
        raise ValueError(
            f"{model_type} needs frame counts in multiples of {hints.frame_factor}; "
            f"set frame_factor to a multiple of it (got {decode.frame_factor})"
        )
    if decode.min_frames < hints.min_frames:
        raise ValueError(
            f"{model_type} needs at least {hints.min_frames} frames per clip; "
            f"raise min_frames (got {decode.min_frames})"
        )
    return decode
