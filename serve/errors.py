"""The endpoint's one error channel: an ``ErrorCode``, its HTTP status, an OpenAI-style body.

Every refusal the endpoint makes is a ``RequestError`` whose status comes from ``STATUS``,
one table for every code, so the same failure answers the same status wherever it is found.
"""

from __future__ import annotations

import json
import re

from fastapi.responses import JSONResponse

from pipelines.core.errors import ErrorCode, StageError

# The status of each code. 4xx: the request (or the media it names) is at fault and a retry
# as-is fails again; 502: a remote media server failed; 503: retry later; 504: out of time.
STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_REQUEST: 400,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.MODEL_NOT_FOUND: 404,
    ErrorCode.BODY_TIMEOUT: 408,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.TOO_LONG: 413,
    ErrorCode.LIMIT_EXCEEDED: 413,
    ErrorCode.OOM: 413,
    ErrorCode.UNSUPPORTED_FORMAT: 422,
    ErrorCode.UNREADABLE: 422,
    ErrorCode.EMPTY: 422,
    ErrorCode.CORRUPT: 422,
    ErrorCode.NO_VIDEO_STREAM: 422,
    ErrorCode.UNSUPPORTED_CODEC: 422,
    ErrorCode.PROMPT_TOO_LONG: 422,
    ErrorCode.MODEL_ERROR: 422,
    ErrorCode.OUT_OF_RANGE: 422,
    ErrorCode.NO_CAPTIONS: 422,
    ErrorCode.NO_AUDIO_STREAM: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.FETCH_FAILED: 502,
    ErrorCode.WORKER_CRASH: 502,
    ErrorCode.OVERLOADED: 503,
    ErrorCode.TIMEOUT: 504,
    ErrorCode.DECODE_TIMEOUT: 504,
}


def status_of(code: ErrorCode) -> int:
    # A code added to the enum later and not yet mapped here is a per-item data error (the
    # enum's purpose), so 422; tests/unit/serve/test_errors.py fails until it is mapped.
    return STATUS.get(code, 422)


RETRY_AFTER_S = "1"
# Temp files of the decoder and absolute paths of the server's disk mean nothing to a client
# and tell an attacker about the host; a message keeps only what the client sent.
_LOCAL_PATH = re.compile(r"(?<![\w:/])/(?:[\w.@+-]+/)+[\w.@+-]*")
_LIMIT_NAME = re.compile(r"limits\.\w+")


class RequestError(Exception):
    """A refused request: answered as ``{"error": {...}}`` with ``STATUS[code]``."""

    def __init__(
        self, code: ErrorCode, message: str, param: str | None = None, headers: dict | None = None
    ) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, scrub(message), param
        self.headers = dict(headers or {})
        if code in (ErrorCode.OVERLOADED, ErrorCode.RATE_LIMITED):
            self.headers.setdefault("Retry-After", RETRY_AFTER_S)
        if code is ErrorCode.UNAUTHORIZED:
            self.headers.setdefault("WWW-Authenticate", "Bearer")

    @property
    def status(self) -> int:
        return status_of(self.code)

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {
            "error": {
                "message": self.message,
                "type": kind,
                "param": self.param,
                "code": self.code.value,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), self.status, self.headers)

    def sse(self) -> str:
        return f"data: {json.dumps(self.body())}\n\n"


def scrub(message: str) -> str:
    return _LOCAL_PATH.sub("<path>", message)


def limit_error(name: str, limit: int | float, got: int | float, what: str) -> RequestError:
    """A per-request limit refused: the message and ``param`` name the config field."""
    return RequestError(
        ErrorCode.LIMIT_EXCEEDED,
        f"{what}: {got} exceeds limits.{name}={limit}",
        param=f"limits.{name}",
    )


def from_stage(err: StageError) -> RequestError:
    named = _LIMIT_NAME.search(err.message) if err.code is ErrorCode.LIMIT_EXCEEDED else None
    param = named.group(0) if named else None
    return RequestError(err.code, f"{err.stage}: {err.message}", param=param)


def overloaded() -> RequestError:
    return RequestError(ErrorCode.OVERLOADED, "the server is at capacity, retry shortly")
