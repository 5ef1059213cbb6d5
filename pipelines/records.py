"""Typed items that flow between stages, and their flat row form.

Rows are what Ray Data blocks and Parquet hold: one flat dict per clip with a fixed set
of columns, so every block of a stage has the same schema. Stages never see rows: the
adapters turn rows into these records, and records back into row updates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipelines.errors import ErrorCode, StageError

# clip_index of a row whose error concerns the whole video (no clip could be cut).
VIDEO_LEVEL = -1

EMPTY_FRAMES = np.zeros((0, 0, 0, 3), dtype=np.uint8)


@dataclass(frozen=True)
class VideoTask:
    """One input video and the prompt to ask about it."""

    video_id: str
    source: str
    prompt: str
    video_key: str = ""
    """Content identity of the input (see pipelines.keys); empty when not computed."""

    def to_row(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "source": self.source,
            "prompt": self.prompt,
            "video_key": self.video_key,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VideoTask:
        return cls(
            str(row["video_id"]),
            str(row["source"]),
            str(row["prompt"]),
            str(row.get("video_key", "")),
        )


@dataclass(frozen=True)
class ClipRef:
    """Where a clip comes from; fixed by the decode stage and carried unchanged after it."""

    video_id: str
    source: str
    prompt: str
    clip_index: int
    start_s: float
    end_s: float
    frame_ts_s: tuple[float, ...] = ()
    partial: bool = False
    video_key: str = ""
    last: bool = False
    """True on the video's final row: the writer then knows every row of it has arrived."""

    @classmethod
    def for_video_error(cls, task: VideoTask) -> ClipRef:
        return cls(
            task.video_id,
            task.source,
            task.prompt,
            VIDEO_LEVEL,
            0.0,
            0.0,
            video_key=task.video_key,
            last=True,
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "source": self.source,
            "prompt": self.prompt,
            "clip_index": self.clip_index,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "frame_ts_s": np.asarray(self.frame_ts_s, dtype=np.float64),
            "partial": self.partial,
            "video_key": self.video_key,
            "last": self.last,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ClipRef:
        return cls(
            video_id=str(row["video_id"]),
            source=str(row["source"]),
            prompt=str(row["prompt"]),
            clip_index=int(row["clip_index"]),
            start_s=float(row["start_s"]),
            end_s=float(row["end_s"]),
            frame_ts_s=tuple(float(t) for t in row["frame_ts_s"]),
            partial=bool(row["partial"]),
            video_key=str(row.get("video_key", "")),
            last=bool(row.get("last", False)),
        )


@dataclass(frozen=True)
class Clip:
    """Decoded, sampled RGB frames of one clip: uint8 (N, H, W, 3)."""

    ref: ClipRef
    frames: np.ndarray = field(repr=False)
    decode_s: float = 0.0


@dataclass(frozen=True)
class FailedClip:
    """A clip (or, with ``clip_index == VIDEO_LEVEL``, a whole video) that produced no frames."""

    ref: ClipRef
    error: StageError
    decode_s: float = 0.0


@dataclass(frozen=True)
class EncodedClip:
    """A clip after the vision encoder: the family's encoder output, serialized."""

    ref: ClipRef
    encoded: bytes = field(repr=False)
    encode_s: float = 0.0


@dataclass(frozen=True)
class Caption:
    """The language model's text for one clip and prompt."""

    ref: ClipRef
    text: str
    prompt_tokens: int
    output_tokens: int
    generate_s: float = 0.0


# Columns every row has from the decode stage on; their defaults fill error rows.
ROW_DEFAULTS: dict[str, Any] = {
    "decode_s": 0.0,
    "encode_s": 0.0,
    "generate_s": 0.0,
    "text": "",
    "prompt_tokens": 0,
    "output_tokens": 0,
    "error_code": "",
    "error_message": "",
    "error_stage": "",
}


def error_fields(err: StageError) -> dict[str, Any]:
    return {"error_code": err.code.value, "error_message": err.message, "error_stage": err.stage}


def row_error(row: Mapping[str, Any]) -> StageError | None:
    code = row.get("error_code") or ""
    if not code:
        return None
    return StageError(ErrorCode(code), str(row["error_message"]), str(row["error_stage"]))


def clip_row(clip: Clip) -> dict[str, Any]:
    return {**ROW_DEFAULTS, **clip.ref.to_row(), "frames": clip.frames, "decode_s": clip.decode_s}


def error_row(ref: ClipRef, err: StageError, decode_s: float = 0.0) -> dict[str, Any]:
    return {
        **ROW_DEFAULTS,
        **ref.to_row(),
        "frames": EMPTY_FRAMES,
        "decode_s": decode_s,
        **error_fields(err),
    }
