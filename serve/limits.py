"""Per-request limits checked in the ingress: body, messages, text, tokens, clips, frames.

Each refusal is 413 ``limit_exceeded`` naming the ``limits.*`` field, so a client knows the
request can never succeed as sent (unlike 503, which says "retry later").
"""

from __future__ import annotations

import asyncio
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect

from pipelines.core.errors import ErrorCode
from pipelines.core.records import Clip
from serve.config import RequestLimits
from serve.errors import RequestError, limit_error
from serve.openai_api import ChatRequest

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, cap: int, timeout_s: float) -> bytes:
    """The whole body, at most ``cap`` bytes, within ``timeout_s`` (408 past it)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise RequestError(ErrorCode.TOO_LARGE, f"request body over {cap} bytes")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > cap:
                raise RequestError(ErrorCode.TOO_LARGE, f"request body over {cap} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(read(), timeout_s)
    except ClientDisconnect:
        # Nobody reads this answer; it keeps the log free of 500s for a client that left.
        raise RequestError(
            ErrorCode.INVALID_REQUEST, "client left before its body arrived"
        ) from None
    except TimeoutError:
        raise RequestError(
            ErrorCode.BODY_TIMEOUT,
            f"request body not received within limits.body_timeout_s={timeout_s}",
            param="limits.body_timeout_s",
        ) from None


def parse(model: type[M], body: bytes) -> M:
    """``model`` from JSON ``body``; wrong shapes, depth bombs and bad values are 400."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[:3]
        where = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in first
        )
        raise RequestError(ErrorCode.INVALID_REQUEST, f"invalid request: {where}") from None


def check_chat(req: ChatRequest, limits: RequestLimits) -> None:
    if len(req.messages) > limits.max_messages:
        raise limit_error("max_messages", limits.max_messages, len(req.messages), "messages")
    chars = 0
    for msg in req.messages:
        if isinstance(msg.content, str):
            chars += len(msg.content)
        elif msg.content is not None:
            chars += sum(len(p.text or "") for p in msg.content)
    if chars > limits.max_text_chars:
        raise limit_error("max_text_chars", limits.max_text_chars, chars, "text characters")
    asked = req.max_completion_tokens or req.max_tokens
    if asked is not None and asked > limits.max_tokens:
        raise limit_error("max_tokens", limits.max_tokens, asked, "max_tokens")


def check_prompt(prompt: str, limits: RequestLimits) -> None:
    if len(prompt) > limits.max_text_chars:
        raise limit_error("max_text_chars", limits.max_text_chars, len(prompt), "prompt characters")


class DecodeBudget:
    """Running totals of one request's decoded clips, frames and bytes."""

    def __init__(self, limits: RequestLimits) -> None:
        self.limits = limits
        self.clips = self.frames = self.bytes = 0

    def add(self, clip: Clip) -> None:
        self.clips += 1
        self.frames += len(clip.frames)
        self.bytes += clip.frames.nbytes
        lim = self.limits
        if self.clips > lim.max_clips:
            raise limit_error("max_clips", lim.max_clips, f"more than {self.clips - 1}", "clips")
        if self.frames > lim.max_frames:
            raise limit_error("max_frames", lim.max_frames, self.frames, "decoded frames")
        if self.bytes > lim.max_decoded_bytes:
            raise limit_error(
                "max_decoded_bytes", lim.max_decoded_bytes, self.bytes, "decoded bytes"
            )
