"""OpenAI chat-completions wire format: the request subset we accept, and responses."""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pipelines.core.config import GenerationConfig
from pipelines.core.errors import ErrorCode
from serve.errors import RequestError


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
    # Hard ceilings of the wire format; ServeConfig.limits sets the tighter working ones.
    content: str | list[ContentPart] | None = Field(default=None, max_length=256)


class CaptionsRequest(_Lenient):
    """The JSON body of /v1/captions (an upload comes as multipart instead)."""

    url: str = Field(min_length=1, max_length=1024**2)
    prompt: str | None = Field(default=None, min_length=1)
    # The video's text (serve.context): an SRT/WebVTT document, free text, the source.
    subtitles: str | None = Field(default=None, max_length=16 * 1024**2)
    context: str | None = None
    context_source: Literal["none", "subtitles", "transcript", "auto"] | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class ChatRequest(_Lenient):
    model: str | None = None
    messages: list[Message] = Field(min_length=1, max_length=1024)
    max_tokens: int | None = Field(default=None, ge=1, le=8192)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=8192)
    temperature: float | None = Field(default=None, ge=0, le=5)
    top_p: float | None = Field(default=None, gt=0, le=1)
    seed: int | None = Field(default=None, ge=0)
    n: int = Field(default=1, ge=1, le=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = Field(default=None, max_length=256)
    """Names the conversation (session) for the encoding cache, like ``X-Session-Id``."""

    def settings(self, defaults: GenerationConfig) -> GenerationConfig:
        update: dict[str, Any] = {}
        max_new = self.max_completion_tokens or self.max_tokens
        if max_new is not None:
            update["max_new_tokens"] = max_new
        for name in ("temperature", "top_p", "seed"):
            if getattr(self, name) is not None:
                update[name] = getattr(self, name)
        return GenerationConfig(**{**defaults.model_dump(), **update})


@dataclass(frozen=True)
class Conversation:
    """What a chat request asks: the new prompt, the turns before it, and its one video."""

    prompt: str
    history: tuple[tuple[str, str], ...]
    media: tuple[str, str]  # (video | image, url)


def split_messages(req: ChatRequest) -> Conversation:
    """The conversation of a chat request: one video (or image) for the whole of it.

    The visual part may sit in any user turn; the prompt is the text of the last user
    turn; earlier user turns and the assistant's answers become the history, in order
    (consecutive turns of one role are joined). System messages are ignored.
    """
    media: list[tuple[str, str]] = []
    turns: list[list] = []  # [role, text]
    for msg in req.messages:
        if msg.role not in ("user", "assistant") or msg.content is None:
            continue
        if isinstance(msg.content, str):
            texts = [msg.content]
        else:
            texts = []
            for part in msg.content:
                if part.type == "text" and part.text:
                    texts.append(part.text)
                elif msg.role == "user" and part.type == "video_url" and part.video_url:
                    media.append(("video", part.video_url.url))
                elif msg.role == "user" and part.type == "image_url" and part.image_url:
                    media.append(("image", part.image_url.url))
        text = "\n".join(t for t in texts if t)
        if turns and turns[-1][0] == msg.role:
            turns[-1][1] = "\n".join(t for t in (turns[-1][1], text) if t)
        else:
            turns.append([msg.role, text])
    if len(media) != 1:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"expected exactly one video_url or image_url part, got {len(media)}",
        )
    if turns and turns[0][0] == "assistant":
        turns.pop(0)  # an opening greeting answers no question
    if not turns or turns[-1][0] != "user" or not turns[-1][1].strip():
        raise RequestError(ErrorCode.INVALID_REQUEST, "the user turn has no text")
    history = tuple((q[1], a[1]) for q, a in zip(turns[:-1:2], turns[1:-1:2], strict=True))
    return Conversation(turns[-1][1], history, media[0])


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
