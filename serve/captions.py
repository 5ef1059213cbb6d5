"""/v1/captions: the request's video, then its clips captioned as they are decoded.

The decoder streams clips; at most ``limits.clips_in_flight`` of them wait between decode
and answer, and the running totals of clips, frames and decoded bytes are checked as each
clip arrives, so a sparse or huge video is refused at its limit instead of being decoded
whole, and a client that goes away stops the work at the next clip.
"""

from __future__ import annotations

import asyncio

from fastapi import Request
from ray.serve.handle import DeploymentHandle
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException

from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.records import Clip, FailedClip
from pipelines.core.result_row import result_row
from serve.config import ServeConfig
from serve.context import RequestText, checked_text, form_text
from serve.errors import RequestError, from_stage
from serve.limits import DecodeBudget, check_prompt, parse
from serve.openai_api import CaptionsRequest


class ClientGone(Exception):
    """The client disconnected: nothing is left to answer."""


async def caption_input(
    request: Request, body: bytes, config: ServeConfig
) -> tuple[bytes | None, str, str, RequestText]:
    """(uploaded bytes or None, url or file name, prompt, the video's text) of a captions
    request (the text: ``subtitles``, ``context``, ``context_source``; see serve.context)."""
    prompt = config.prompt
    if request.headers.get("content-type", "").startswith("multipart/form-data"):

        async def replay():
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(
                max_files=2, max_fields=8, max_part_size=config.security.max_body_bytes
            )
        except (MultiPartException, HTTPException, ValueError) as exc:
            detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or "malformed"
            raise RequestError(ErrorCode.INVALID_REQUEST, f"multipart body: {detail}") from None
        try:
            text = form.get("prompt")
            if isinstance(text, str) and text:
                prompt = text
            extra = await form_text(form, config)
            upload, url = form.get("file"), form.get("url")
            if isinstance(upload, UploadFile):
                name = (upload.filename or "upload")[:256]
                check_prompt(prompt, config.limits)
                return await upload.read(), name, prompt, extra
        finally:
            await form.close()
        if not isinstance(url, str) or not url:
            raise RequestError(ErrorCode.INVALID_REQUEST, "send a multipart 'file' or a 'url'")
    else:
        req = parse(CaptionsRequest, body or b"{}")
        url, prompt = req.url, req.prompt or prompt
        extra = checked_text(req.subtitles, req.context, req.context_source, config)
    check_prompt(prompt, config.limits)
    return None, url, prompt, extra


async def caption_rows(
    request: Request,
    config: ServeConfig,
    handles: tuple[DeploymentHandle, DeploymentHandle, DeploymentHandle],
    media: bytes,
    video_id: str,
    prompt: str,
    source: str,
    text: RequestText | None = None,
) -> list[dict]:
    decoder, encoder, lm = handles
    budget = DecodeBudget(config.limits)
    stream = decoder.options(stream=True).clips.remote(
        media, "captions", video_id, prompt, source, text
    )
    order: list[asyncio.Task | dict] = []
    pending: set[asyncio.Task] = set()
    failure: StageError | None = None
    clips = 0

    async def row(clip: Clip) -> dict:
        encoded = await encoder.encode.remote(clip)
        if isinstance(encoded, StageError):
            return _row(config, clip, encoded, 0.0)
        result = await lm.generate.remote((encoded, config.generation))
        return _row(config, clip, result, encoded.encode_s)

    try:
        async for item in stream:
            if isinstance(item, FailedClip):
                if item.error.code is ErrorCode.LIMIT_EXCEEDED:
                    raise from_stage(item.error)
                failure = failure or item.error
                order.append(_row(config, item, item.error, 0.0))
                continue
            budget.add(item)
            clips += 1
            if await request.is_disconnected():
                raise ClientGone
            while len(pending) >= config.limits.clips_in_flight:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.ensure_future(row(item))
            pending.add(task)
            order.append(task)
        if clips == 0 and failure is not None:
            raise from_stage(failure)
        return [r if isinstance(r, dict) else await r for r in order]
    finally:
        stream.cancel()
        for task in order:
            if isinstance(task, asyncio.Task):
                task.cancel()


def _row(config: ServeConfig, clip: Clip | FailedClip, result, encode_s: float) -> dict:
    model = config.model
    return result_row(
        clip.ref,
        result,
        model_id=model.model,
        model_revision=model.revision or "",
        decode_s=clip.decode_s,
        encode_s=encode_s,
    )
