"""The text a /v1/captions request sends with its video: subtitles, free text, a source.

A request may send, next to its video (multipart) or its ``url`` (JSON):

- ``subtitles``: an ``.srt``/``.vtt`` document — a multipart *file* part, or a JSON string.
  It is parsed by ``pipelines.media.subtitles`` exactly as a manifest's ``subtitles`` file
  is offline, so a garbled one gives no cues (the rows are captioned without speech), never
  an error; only a wrong-typed part or one over ``MAX_SUBTITLE_BYTES`` is refused.
- ``context``: free text about the video (a title, a description); offline it is the
  manifest's ``context`` column, and rows name its source ``manifest`` in both.
- ``context_source``: ``none``, ``subtitles``, ``transcript`` or ``auto``, as offline
  (``ContextConfig.source``); the endpoint's ``context.source`` when left out.
  ``transcript`` needs an endpoint configured with ``asr``.

The decoder writes the subtitles next to the media it decodes and runs the offline decode
stage on both, so each clip carries its own cues to the LM through the same code path.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

from starlette.datastructures import FormData, UploadFile

from pipelines.core.errors import ErrorCode
from pipelines.media.subtitles import MAX_SUBTITLE_BYTES
from serve.config import ServeConfig
from serve.errors import RequestError, limit_error

Source = Literal["none", "subtitles", "transcript", "auto"]
SOURCES: tuple[str, ...] = get_args(Source)


@dataclass(frozen=True)
class RequestText:
    """What the decoder needs to give a request's clips their speech and context."""

    source: str
    """Context source of this request (``ContextConfig.source``)."""
    subtitles: bytes = b""
    """The uploaded subtitle document, as sent (decoded by the subtitle parser's rules)."""
    context: str = ""
    """Free text about the whole video."""
    transcript: str = ""
    """Speech-recognition segments (``segments_to_json``), set once the audio is transcribed."""

    def with_transcript(self, segments_json: str) -> RequestText:
        return replace(self, transcript=segments_json)

    def wants_asr(self, config: ServeConfig) -> bool:
        """Whether the audio should go to speech recognition (``auto`` decides per video
        in the decoder: a video whose subtitles give cues is not transcribed)."""
        return (
            config.asr is not None
            and config.context.max_tokens > 0
            and self.source in ("auto", "transcript")
        )


async def form_text(form: FormData, config: ServeConfig) -> RequestText:
    """The text parts of a multipart captions request; a wrong-typed part is a 400."""
    sub = form.get("subtitles")
    if sub is not None and not isinstance(sub, UploadFile):
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            "'subtitles' must be a file part (curl -F subtitles=@clip.srt)",
            param="subtitles",
        )
    data = b""
    if sub is not None:
        if sub.size is not None and sub.size > MAX_SUBTITLE_BYTES:
            raise _too_large()
        data = await sub.read(MAX_SUBTITLE_BYTES + 1)
    fields = {}
    for name in ("context", "context_source"):
        value = form.get(name)
        if value is not None and not isinstance(value, str):
            raise RequestError(
                ErrorCode.INVALID_REQUEST, f"{name!r} must be a text field", param=name
            )
        fields[name] = value
    return checked_text(data, fields["context"], fields["context_source"], config)


def checked_text(
    subtitles: bytes | str | None,
    context: str | None,
    source: str | None,
    config: ServeConfig,
) -> RequestText:
    """A ``RequestText`` within the endpoint's limits (the JSON body's fields come here too)."""
    if isinstance(subtitles, str):
        subtitles = subtitles.encode("utf-8", errors="replace")
    subtitles = subtitles or b""
    if len(subtitles) > MAX_SUBTITLE_BYTES:
        raise _too_large()
    context = context or ""
    limits = config.limits
    if len(context) > limits.max_text_chars:
        raise limit_error(
            "max_text_chars", limits.max_text_chars, len(context), "context characters"
        )
    source = source or config.context.source
    if source not in SOURCES:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            f"context_source must be one of {', '.join(SOURCES)}",
            param="context_source",
        )
    if source == "transcript" and config.asr is None:
        raise RequestError(
            ErrorCode.INVALID_REQUEST,
            "context_source 'transcript' needs speech recognition, which this endpoint does not run",
            param="context_source",
        )
    return RequestText(source, subtitles, context)


def _too_large() -> RequestError:
    return RequestError(
        ErrorCode.TOO_LARGE, f"subtitles over {MAX_SUBTITLE_BYTES} bytes", param="subtitles"
    )
