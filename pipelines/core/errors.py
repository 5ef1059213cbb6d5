"""Typed per-item errors: the one channel through which bad input leaves a stage.

A stage never raises for a bad item; it returns a ``StageError`` in that item's slot.
Exceptions are kept for configuration mistakes (raised at construction) and for
infrastructure failures, which must propagate so that Ray retries the task or actor.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ErrorCode(str, enum.Enum):
    """Why an item produced no text. Stable strings: they are written to Parquet."""

    NOT_FOUND = "not_found"  # the path does not exist
    UNREADABLE = "unreadable"  # exists but cannot be opened (permissions, I/O error)
    EMPTY = "empty"  # zero bytes, or no decodable frame at all
    CORRUPT = "corrupt"  # container or bitstream cannot be parsed
    NO_VIDEO_STREAM = "no_video_stream"  # a valid container without any video stream
    UNSUPPORTED_CODEC = "unsupported_codec"  # FFmpeg has no decoder for the stream
    TOO_LARGE = "too_large"  # file bytes or frame pixels over the configured limit
    TOO_LONG = "too_long"  # duration over the configured limit
    DECODE_TIMEOUT = "decode_timeout"  # wall-clock budget per video exceeded
    FORBIDDEN = "forbidden"  # would make FFmpeg open another file or URL
    PROMPT_TOO_LONG = "prompt_too_long"  # prompt + visual tokens exceed the model context
    MODEL_ERROR = "model_error"  # the model rejected this item's inputs (shape, dtype, ...)
    WORKER_CRASH = "worker_crash"  # the input killed its worker on every allowed attempt
    OOM = "oom"  # decoding this input ran out of memory on every allowed attempt
    FETCH_FAILED = "fetch_failed"  # a media URL could not be fetched (refused, timeout, HTTP error)
    INVALID_REQUEST = "invalid_request"  # an online request is malformed (no video, bad JSON)
    OUT_OF_RANGE = "out_of_range"  # a question's time range overlaps no clip of the video
    NO_CAPTIONS = "no_captions"  # a video summary has no clip caption to start from
    NO_AUDIO_STREAM = "no_audio_stream"  # speech recognition asked of a video without audio
    # Online-only codes (serve/errors.py maps every code to its HTTP status).
    UNAUTHORIZED = "unauthorized"  # missing or wrong API key
    OVERLOADED = "overloaded"  # the endpoint is at capacity; retry after Retry-After
    TIMEOUT = "timeout"  # a request, body read or fetch ran past its time budget
    MODEL_NOT_FOUND = "model_not_found"  # the request names a model this endpoint does not serve
    LIMIT_EXCEEDED = "limit_exceeded"  # over a per-request limit (clips, frames, pixels, ...)
    RATE_LIMITED = "rate_limited"  # one client holds more requests than its share
    UNSUPPORTED_FORMAT = "unsupported_format"  # an image format outside the accepted list
    BODY_TIMEOUT = "body_timeout"  # the request body did not arrive in time


@dataclass(frozen=True)
class StageError:
    """An item-level failure: which stage, which code, and a message a human can act on."""

    code: ErrorCode
    message: str
    stage: str

    def __post_init__(self) -> None:
        if not isinstance(self.code, ErrorCode):
            raise TypeError(f"StageError.code must be an ErrorCode, got {self.code!r}")


class MediaError(Exception):
    """Raised inside the media layer for a bad input; the decode stage turns it into a StageError."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
