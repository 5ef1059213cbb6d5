"""OpenAI chat-completions wire format: the request subset we accept, responses, errors."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.config import GenerationConfig
from pipelines.errors import ErrorCode


class _Lenient(BaseModel):
    # Clients send fields we do not use (user, logprobs=false, ...): ignore, don't fail.
    model_config = ConfigDict(extra="ignore")


class MediaURL(_Lenient):
    url: str = Field(min_length=1)


class ContentPart(_Lenient):
    type: Literal["text", "video_url", "image_url"]
    text: str | None = None
    video_url: MediaURL | None = None
    image_url: MediaURL | None = None


class Message(_Lenient):
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[ContentPart] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0, le=5)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None

    def settings(self, defaults: GenerationConfig) -> GenerationConfig:
        update: dict[str, Any] = {}
        max_new = self.max_completion_tokens or self.max_tokens
        if max_new is not None:
            update["max_new_tokens"] = max_new
        for name in ("temperature", "top_p", "seed"):
            if getattr(self, name) is not None:
                update[name] = getattr(self, name)
        return GenerationConfig(**{**defaults.model_dump(), **update})


class RequestError(Exception):
    """Answered as OpenAI-style error JSON with ``status``; ``code`` is our ErrorCode value."""

    def __init__(self, status: int, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


# Media failures that are about size or time get their own HTTP status; the rest are 400.
STATUS_BY_CODE = {
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.TOO_LONG: 413,
    ErrorCode.DECODE_TIMEOUT: 504,
}


def error_body(status: int, code: str, message: str) -> dict:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def split_messages(req: ChatRequest) -> tuple[str, tuple[str, str]]:
    """Return (prompt, (media kind, url)) from the last user turn that has content.

    One video (or image) per conversation: the visual part may sit in any user turn;
    the prompt is the text of the last user turn.
    """
    media: list[tuple[str, str]] = []
    prompt = ""
    for msg in req.messages:
        if msg.role != "user" or msg.content is None:
            continue
        if isinstance(msg.content, str):
            prompt = msg.content
            continue
        texts = []
        for part in msg.content:
            if part.type == "text" and part.text:
                texts.append(part.text)
            elif part.type == "video_url" and part.video_url:
                media.append(("video", part.video_url.url))
            elif part.type == "image_url" and part.image_url:
                media.append(("image", part.image_url.url))
        if texts:
            prompt = "\n".join(texts)
    if len(media) != 1:
        raise RequestError(
            400,
            ErrorCode.INVALID_REQUEST.value,
            f"expected exactly one video_url or image_url part, got {len(media)}",
        )
    if not prompt.strip():
        raise RequestError(400, ErrorCode.INVALID_REQUEST.value, "the user turn has no text")
    return prompt, media[0]


def completion(
    model: str, text: str, prompt_tokens: int, output_tokens: int, max_new_tokens: int
) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "length" if output_tokens >= max_new_tokens else "stop",
            }
        ],
        "usage": usage(prompt_tokens, output_tokens),
    }


def usage(prompt_tokens: int, output_tokens: int) -> dict:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": output_tokens,
        "total_tokens": prompt_tokens + output_tokens,
    }


def sse_chunk(
    chunk_id: str,
    model: str,
    delta: dict,
    finish_reason: str | None = None,
    usage_: dict | None = None,
) -> str:
    body: dict[str, Any] = {
        "id": chunk_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }
    if usage_ is not None:
        body["usage"] = usage_
    return f"data: {json.dumps(body)}\n\n"
