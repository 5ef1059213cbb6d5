"""The endpoint: FastAPI ingress -> Decoder -> Encoder -> LanguageModel, by handles.

``build_app(ServeConfig)`` returns the Serve application; ``app_builder`` is the entry
point named in ``serve/config.yaml`` for ``serve run`` / ``serve deploy``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
import uuid
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.background import BackgroundTask

from pipelines.errors import ErrorCode, StageError
from pipelines.inputs import video_id_for
from pipelines.job import check_sampling
from pipelines.models import resolve_family
from pipelines.output import result_row
from pipelines.records import Ask, Caption, Clip, EncodedClip, FailedClip
from serve.config import ServeConfig
from serve.deployments import Decoder, Encoder, LanguageModel
from serve.encoding_cache import EncodingCache
from serve.fetch import FetchError
from serve.media import load_media
from serve.openai_api import (
    STATUS_BY_CODE,
    ChatRequest,
    Conversation,
    RequestError,
    completion,
    error_body,
    split_messages,
    sse_chunk,
    usage,
)

api = FastAPI(title="vidcap", version="1")
RETRY_AFTER_S = "1"


def _error_response(exc: RequestError) -> JSONResponse:
    return JSONResponse(error_body(exc.status, exc.code, exc.message), exc.status, exc.headers)


def _stage_error(err: StageError) -> RequestError:
    return RequestError(
        STATUS_BY_CODE.get(err.code, 400), err.code.value, f"{err.stage}: {err.message}"
    )


async def _read_body(request: Request, cap: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > cap:
        raise RequestError(413, ErrorCode.TOO_LARGE.value, f"request body over {cap} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise RequestError(413, ErrorCode.TOO_LARGE.value, f"request body over {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        config: ServeConfig,
        decoder: DeploymentHandle,
        encoder: DeploymentHandle,
        lm: DeploymentHandle,
    ) -> None:
        self.config = config
        self.decoder, self.encoder, self.lm = decoder, encoder, lm
        self._inflight = 0
        self.cache = EncodingCache(int(config.encoding_cache_mb * 1024**2))

    # -- plumbing ------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        key = self.config.security.api_key
        if key is None:
            return
        sent = request.headers.get("authorization", "")
        if not secrets.compare_digest(sent.encode(), f"Bearer {key}".encode()):
            raise RequestError(
                401, "unauthorized", "missing or wrong API key", {"WWW-Authenticate": "Bearer"}
            )

    async def _guard(self, coro) -> Any:
        """Map overload and slowness to 503/504; bad input was mapped where it was found."""
        try:
            return await asyncio.wait_for(coro, self.config.request_timeout_s)
        except TimeoutError:
            raise RequestError(
                504, "timeout", f"no answer within {self.config.request_timeout_s} s"
            ) from None
        except BackPressureError:
            raise RequestError(
                503,
                "overloaded",
                "the server is at capacity, retry shortly",
                {"Retry-After": RETRY_AFTER_S},
            ) from None
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, BackPressureError):
                raise RequestError(
                    503,
                    "overloaded",
                    "the server is at capacity, retry shortly",
                    {"Retry-After": RETRY_AFTER_S},
                ) from None
            raise

    def _admit(self) -> None:
        """Refuse at the door when the pipeline is full, before spending any work on it.

        Refusing only at the LM's queue would let decode and encode burn CPU on requests
        that are then dropped, slowing the admitted ones.
        """
        if self._inflight >= self.config.inflight_limit:
            raise RequestError(
                503,
                "overloaded",
                "the server is at capacity, retry shortly",
                {"Retry-After": RETRY_AFTER_S},
            )
        self._inflight += 1

    def _release(self) -> None:
        self._inflight -= 1

    async def _media(self, url: str) -> bytes:
        try:
            return await asyncio.to_thread(load_media, url, self.config.security)
        except FetchError as exc:
            raise RequestError(exc.status, exc.code.value, exc.message) from None

    async def _clips(
        self, media: bytes, mode: str, video_id: str, prompt: str, source: str
    ) -> list[Clip]:
        items: list[Clip | FailedClip] = await self.decoder.decode.remote(
            media, mode, video_id, prompt, source
        )
        failed = [i for i in items if isinstance(i, FailedClip)]
        if failed and not any(isinstance(i, Clip) for i in items):
            raise _stage_error(failed[0].error)
        return [i for i in items if isinstance(i, Clip)]

    async def _encoded_video(
        self, conv: Conversation, media: bytes, session: str
    ) -> tuple[EncodedClip, str]:
        """The chat video's encoding, from this session's cache when it was seen before."""
        kind, url = conv.media
        mode = "image" if kind == "image" else "chat"
        key = None
        if session and self.cache.enabled:
            if len(session) > 256:
                raise RequestError(400, ErrorCode.INVALID_REQUEST.value, "session id too long")
            key = await asyncio.to_thread(EncodingCache.key, session, media, mode)
            if (hit := self.cache.get(key)) is not None:
                return hit, "hit"
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        source = "data-url" if url.startswith("data:") else url
        clips = await self._guard(self._clips(media, mode, request_id, conv.prompt, source))
        if len(clips) != 1:
            raise RequestError(
                413,
                ErrorCode.TOO_LONG.value,
                "video too long for one chat answer; use /v1/captions",
            )
        encoded = await self._guard(self._encode(clips[0]))
        if key is not None:
            self.cache.put(key, encoded)
        return encoded, "miss" if key else "off"

    async def _encode(self, clip: Clip) -> EncodedClip:
        out = await self.encoder.encode.remote(clip)
        if isinstance(out, StageError):
            raise _stage_error(out)
        return out

    # -- endpoints -----------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        status = serve.status().applications
        ready = all(app.status == "RUNNING" for app in status.values())
        return JSONResponse({"ready": ready}, 200 if ready else 503)

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
        except RequestError as exc:
            return _error_response(exc)
        model = {
            "id": self.config.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "vidcap",
        }
        return JSONResponse({"object": "list", "data": [model]})

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request):
        try:
            self._authorize(request)
            self._admit()  # before reading the body: a refusal must cost next to nothing
        except RequestError as exc:
            return _error_response(exc)
        streaming = False
        try:
            body = await _read_body(request, self.config.security.max_body_bytes)
            try:
                req = ChatRequest.model_validate_json(body)
            except ValidationError as exc:
                raise RequestError(400, ErrorCode.INVALID_REQUEST.value, str(exc)) from None
            if req.model not in (None, self.config.model_name):
                raise RequestError(
                    404, "model_not_found", f"model {req.model!r} is not served here"
                )
            conv = split_messages(req)
            settings = req.settings(self.config.generation)
            session = request.headers.get("x-session-id") or req.user or ""
            media = await self._guard(self._media(conv.media[1]))
            encoded, cache = await self._encoded_video(conv, media, session)
            ask = Ask(conv.prompt, "qa" if conv.history else "caption", history=conv.history)
            encoded = EncodedClip(encoded.ref.for_ask(ask), encoded.encoded, encoded.encode_s)
            headers = {"X-Vidcap-Encoding-Cache": cache}
            if req.stream:
                streaming = True  # the stream releases the slot when it ends
                return StreamingResponse(
                    self._stream(req, encoded, settings),
                    media_type="text/event-stream",
                    headers=headers,
                    # Runs when the response ends, however it ends (client gone included).
                    background=BackgroundTask(self._release),
                )
            out = await self._guard(self.lm.generate.remote((encoded, settings)))
            if isinstance(out, StageError):
                raise _stage_error(out)
            return JSONResponse(
                completion(
                    self.config.model_name,
                    out.text,
                    out.prompt_tokens,
                    out.output_tokens,
                    settings.max_new_tokens,
                ),
                headers=headers,
            )
        except RequestError as exc:
            return _error_response(exc)
        finally:
            if not streaming:
                self._release()

    async def _stream(self, req: ChatRequest, encoded: EncodedClip, settings):
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        model = self.config.model_name
        yield sse_chunk(chunk_id, model, {"role": "assistant", "content": ""})
        final: Caption | StageError | None = None
        async for piece in self.lm.options(stream=True).stream.remote(encoded, settings):
            if isinstance(piece, str):
                yield sse_chunk(chunk_id, model, {"content": piece})
            else:
                final = piece
        if isinstance(final, StageError):
            err = _stage_error(final)
            yield f"data: {error_body(err.status, err.code, err.message)}\n\n"
        else:
            reason = "length" if final.output_tokens >= settings.max_new_tokens else "stop"
            include = req.stream_options is not None and req.stream_options.include_usage
            yield sse_chunk(
                chunk_id,
                model,
                {},
                reason,
                usage(final.prompt_tokens, final.output_tokens) if include else None,
            )
        yield "data: [DONE]\n\n"

    @api.post("/v1/captions")
    async def captions(self, request: Request):
        """Caption every clip of an uploaded (multipart ``file``) or referenced (``url``) video."""
        try:
            self._authorize(request)
            self._admit()
        except RequestError as exc:
            return _error_response(exc)
        try:
            body = await _read_body(request, self.config.security.max_body_bytes)
            media, source, prompt = await self._caption_input(request, body)
            video_id = video_id_for(source)
            started = time.perf_counter()
            clips = await self._guard(self._clips(media, "captions", video_id, prompt, source))
            rows = await self._guard(asyncio.gather(*(self._caption_row(c) for c in clips)))
            return JSONResponse(
                {
                    "video_id": video_id,
                    "model_id": self.config.model.model,
                    "wall_s": round(time.perf_counter() - started, 3),
                    "clips": rows,
                }
            )
        except RequestError as exc:
            return _error_response(exc)
        finally:
            self._release()

    async def _caption_input(self, request: Request, body: bytes) -> tuple[bytes, str, str]:
        prompt = self.config.prompt
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):

            async def replay():
                return {"type": "http.request", "body": body, "more_body": False}

            form = await Request(request.scope, replay).form()
            prompt = str(form.get("prompt") or prompt)
            upload = form.get("file")
            if upload is not None and hasattr(upload, "read"):
                name = getattr(upload, "filename", None) or "upload"
                return await upload.read(), name, prompt
            url = form.get("url")
        else:
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                raise RequestError(
                    400, ErrorCode.INVALID_REQUEST.value, "body is not JSON"
                ) from None
            url, prompt = data.get("url"), data.get("prompt") or prompt
        if not url:
            raise RequestError(
                400, ErrorCode.INVALID_REQUEST.value, "send a multipart 'file' or a 'url'"
            )
        url = str(url)
        name = "data-url" if url.startswith("data:") else url
        return await self._guard(self._media(url)), name, str(prompt)

    async def _caption_row(self, clip: Clip) -> dict:
        encoded = await self.encoder.encode.remote(clip)
        if isinstance(encoded, StageError):
            result, encode_s = encoded, 0.0
        else:
            result = await self.lm.generate.remote((encoded, self.config.generation))
            encode_s = encoded.encode_s
        model = self.config.model
        return result_row(
            clip.ref,
            result,
            model_id=model.model,
            model_revision=model.revision or "",
            decode_s=clip.decode_s,
            encode_s=encode_s,
        )


def build_app(config: ServeConfig):
    """Bind the four deployments with their own autoscaling and admission settings."""
    family, model_type = resolve_family(config.model.model, config.model.revision)
    check_sampling(config.decode, family.hints, model_type)
    gpus = ray.is_initialized() and ray.cluster_resources().get("GPU", 0) > 0
    captions_decode = config.decode
    # Chat answers about the whole video: one clip, its frames capped by max_frames.
    chat_decode = config.decode.model_copy(update={"chunking": "none"})
    enc_gpus = config.encoder.serve_options(gpus)["ray_actor_options"]["num_gpus"]
    lm_gpus = config.lm.serve_options(gpus)["ray_actor_options"]["num_gpus"]
    decoder = Decoder.options(**config.decoder.serve_options(False)).bind(
        captions_decode, chat_decode
    )
    encoder = Encoder.options(**config.encoder.serve_options(gpus)).bind(
        config.model, config.encoder, enc_gpus
    )
    lm = LanguageModel.options(**config.lm.serve_options(gpus)).bind(
        config.model, config.lm, lm_gpus, config.generation
    )
    return Ingress.options(**config.ingress.serve_options(False)).bind(config, decoder, encoder, lm)


def app_builder(args: dict[str, Any]):
    """Entry point for ``serve run serve.app:app_builder``: args are a ServeConfig dict."""
    return build_app(ServeConfig.model_validate(args or {}))
