"""The endpoint: FastAPI ingress -> Decoder -> Encoder -> LanguageModel, by handles.

``build_app(ServeConfig)`` returns the Serve application; ``app_builder`` is the entry
point named in ``serve/config.yaml`` for ``serve run`` / ``serve deploy``.

Every answer that is not a success is ``{"error": {"message", "type", "param", "code"}}``
with the status ``serve.errors.STATUS`` gives its code, streamed answers included.
"""

# No ``from __future__ import annotations`` here: Serve re-signs the route methods for its
# class-based view, and FastAPI then leaves string annotations unresolved, so ``request:
# Request`` became a required query parameter (every route answered 400).
import asyncio
import logging
import os
import secrets
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import ray
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException

from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.paths import video_id_for
from pipelines.core.records import Ask, Caption, Clip, EncodedClip, FailedClip
from pipelines.models import resolve_family
from pipelines.models.hints import check_sampling
from serve.admission import Admission, SlotStream, principal
from serve.captions import ClientGone, caption_input, caption_rows
from serve.config import ServeConfig
from serve.deployments import Decoder, Encoder, LanguageModel
from serve.encoding_cache import EncodingCache
from serve.errors import RequestError, from_stage, overloaded
from serve.fetch import FetchError
from serve.limits import check_chat, parse, read_body
from serve.media import load_media
from serve.openai_api import (
    ChatRequest,
    Conversation,
    completion,
    split_messages,
    sse_chunk,
    usage,
)
from serve.speech import Transcriber, Transcript, transcribe_media

log = logging.getLogger("ray.serve")
# The schema and its UI are served only through the authorized route below.
api = FastAPI(title="vidcap", version="1", docs_url=None, redoc_url=None, openapi_url=None)


@api.exception_handler(HTTPException)
async def _http_error(_: Request, exc: HTTPException) -> JSONResponse:
    code = ErrorCode.NOT_FOUND if exc.status_code in (404, 405) else ErrorCode.INVALID_REQUEST
    return RequestError(code, str(exc.detail)).response()


@api.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    where = "; ".join(".".join(str(p) for p in e["loc"]) for e in exc.errors()[:3])
    return RequestError(ErrorCode.INVALID_REQUEST, f"invalid request: {where}").response()


@serve.deployment
@serve.ingress(api)
class Ingress:
    def __init__(
        self,
        config: ServeConfig,
        decoder: DeploymentHandle,
        encoder: DeploymentHandle,
        lm: DeploymentHandle,
        transcriber: DeploymentHandle | None = None,
    ) -> None:
        self.config = config
        self.decoder, self.encoder, self.lm = decoder, encoder, lm
        self.transcriber = transcriber  # deployed only when config.asr is set
        self.admission = Admission(config.inflight_limit, config.limits.max_inflight_per_client)
        self.cache = EncodingCache(int(config.encoding_cache_mb * 1024**2))
        # Fetches, hashing and serve.status() block: they get threads of their own, so an
        # abandoned fetch (its client gone) can never starve the default executor. Each
        # admitted request runs at most one of them at a time.
        self.threads = ThreadPoolExecutor(config.inflight_limit + 2, "vidcap-ingress")

    # -- plumbing ------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        key = self.config.security.api_key
        if key is None:
            return
        sent = request.headers.get("authorization", "")
        if not secrets.compare_digest(sent.encode(), f"Bearer {key}".encode()):
            raise RequestError(ErrorCode.UNAUTHORIZED, "missing or wrong API key")

    def _who(self, request: Request) -> str:
        return principal(request, self.config.security.api_key is not None)

    async def _blocking(self, fn, *args) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.threads, fn, *args)

    async def _guard(self, coro) -> Any:
        """One deadline for the request's work; overload is 503, a dead worker 502."""
        timeout = self.config.request_timeout_s
        try:
            return await asyncio.wait_for(coro, timeout)
        except TimeoutError:
            raise RequestError(ErrorCode.TIMEOUT, f"no answer within {timeout} s") from None
        except BackPressureError:
            raise overloaded() from None
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, BackPressureError):
                raise overloaded() from None
            log.exception("a pipeline deployment failed")
            raise RequestError(ErrorCode.WORKER_CRASH, "a pipeline worker failed") from None
        except ray.exceptions.RayError:
            log.exception("a pipeline deployment is unavailable")
            raise RequestError(ErrorCode.WORKER_CRASH, "a pipeline worker failed") from None

    async def _media(self, url: str) -> bytes:
        try:
            return await self._blocking(load_media, url, self.config.security)
        except FetchError as exc:
            raise RequestError(exc.code, exc.message) from None

    async def _chat_clip(self, media: bytes, mode: str, prompt: str, source: str) -> Clip:
        request_id = f"req-{uuid.uuid4().hex[:12]}"
        stream = self.decoder.options(stream=True).clips.remote(
            media, mode, request_id, prompt, source
        )
        clips: list[Clip] = []
        failed: FailedClip | None = None
        try:
            async for item in stream:
                if isinstance(item, FailedClip):
                    failed = failed or item
                    continue
                clips.append(item)
                if len(clips) > 1:
                    break
        finally:
            stream.cancel()
        if not clips and failed is not None:
            raise from_stage(failed.error)
        if len(clips) != 1:
            raise RequestError(
                ErrorCode.TOO_LONG, "video too long for one chat answer; use /v1/captions"
            )
        return clips[0]

    async def _encoded_video(
        self, conv: Conversation, media: bytes, session: str, who: str
    ) -> EncodedClip:
        """The chat video's encoding, from this session's cache when it was seen before."""
        kind, url = conv.media
        mode = "image" if kind == "image" else "chat"
        key = None
        if session and self.cache.enabled:
            if len(session) > 256:
                raise RequestError(ErrorCode.INVALID_REQUEST, "session id too long")
            # Scoped by the client too: a guessed session id of another client never hits.
            key = await self._blocking(EncodingCache.key, f"{who}\n{session}", media, mode)
            if (hit := self.cache.get(key)) is not None:
                return hit
        source = "data-url" if url.startswith("data:") else url
        clip = await self._chat_clip(media, mode, conv.prompt, source)
        encoded = await self.encoder.encode.remote(clip)
        if isinstance(encoded, StageError):
            raise from_stage(encoded)
        if key is not None:
            self.cache.put(key, encoded)
        return encoded

    # -- endpoints -----------------------------------------------------------------------

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok"}

    @api.get("/readyz")
    async def readyz(self) -> JSONResponse:
        status = (await self._blocking(serve.status)).applications
        ready = all(app.status == "RUNNING" for app in status.values())
        return JSONResponse({"ready": ready}, 200 if ready else 503)

    @api.get("/openapi.json")
    async def openapi(self, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
        except RequestError as exc:
            return exc.response()
        return JSONResponse(api.openapi())

    @api.get("/v1/models")
    async def models(self, request: Request) -> JSONResponse:
        try:
            self._authorize(request)
        except RequestError as exc:
            return exc.response()
        model = {
            "id": self.config.model_name,
            "object": "model",
            "created": 0,
            "owned_by": "vidcap",
        }
        return JSONResponse({"object": "list", "data": [model]})

    def stats(self) -> dict:
        """Admission and cache counters (for operators, tests and benches, by a handle)."""
        return {**self.admission.stats(), "cache": self.cache.stats(), "pid": os.getpid()}

    async def _admitted_body(self, request: Request) -> bytes:
        self._authorize(request)
        if self.admission.full():
            raise overloaded()  # before reading the body: a refusal must cost next to nothing
        # The slot is taken only once the body is in: a client that sends it slowly holds
        # none, and the body read has its own deadline.
        limits = self.config.limits
        return await read_body(request, self.config.security.max_body_bytes, limits.body_timeout_s)

    @api.post("/v1/chat/completions")
    async def chat(self, request: Request):
        slot = None
        try:
            body = await self._admitted_body(request)
            req = parse(ChatRequest, body)
            check_chat(req, self.config.limits)
            if req.model not in (None, self.config.model_name):
                raise RequestError(
                    ErrorCode.MODEL_NOT_FOUND,
                    f"model {req.model[:256]!r} is not served here",
                    param="model",
                )
            conv = split_messages(req)
            settings = req.settings(self.config.generation)
            who = self._who(request)
            slot = self.admission.take(who)
            session = request.headers.get("x-session-id") or req.user or ""

            async def prepare() -> EncodedClip:
                media = await self._media(conv.media[1])
                return await self._encoded_video(conv, media, session, who)

            encoded = await self._guard(prepare())
            ask = Ask(conv.prompt, "qa" if conv.history else "caption", history=conv.history)
            encoded = EncodedClip(encoded.ref.for_ask(ask), encoded.encoded, encoded.encode_s)
            if req.stream:
                response = SlotStream(
                    self._stream(req, encoded, settings), slot, media_type="text/event-stream"
                )
                slot = None  # the stream releases it when its send ends, however it ends
                return response
            out = await self._guard(self.lm.generate.remote((encoded, settings)))
            if isinstance(out, StageError):
                raise from_stage(out)
            return JSONResponse(
                completion(
                    self.config.model_name,
                    out.text,
                    out.prompt_tokens,
                    out.output_tokens,
                    settings.max_new_tokens,
                )
            )
        except RequestError as exc:
            return exc.response()
        finally:
            if slot is not None:
                slot.release()

    async def _stream(self, req: ChatRequest, encoded: EncodedClip, settings):
        chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
        model = self.config.model_name
        yield sse_chunk(chunk_id, model, {"role": "assistant", "content": ""})
        final: Caption | StageError | None = None
        pieces = self.lm.options(stream=True).stream.remote(encoded, settings)
        try:
            async for piece in pieces:
                if isinstance(piece, str):
                    yield sse_chunk(chunk_id, model, {"content": piece})
                else:
                    final = piece
        except (ray.exceptions.RayError, BackPressureError):
            log.exception("the language model's stream failed")
            final = StageError(ErrorCode.WORKER_CRASH, "the model worker failed", "generate")
        finally:
            pieces.cancel()  # a no-op when it ended; stops generation when the client left
        if isinstance(final, StageError):
            yield from_stage(final).sse()
        elif final is not None:
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
        slot = None
        try:
            body = await self._admitted_body(request)
            upload, source, prompt, text = await caption_input(request, body, self.config)
            slot = self.admission.take(self._who(request))
            video_id = video_id_for(source)
            started = time.perf_counter()
            handles = (self.decoder, self.encoder, self.lm)

            async def work() -> tuple[list[dict], Transcript | None]:
                media = upload if upload is not None else await self._media(source)
                name = "data-url" if source.startswith("data:") else source
                transcript, given = None, text
                if self.transcriber is not None and text.wants_asr(self.config):
                    # Before the clips: each clip's prompt holds the speech of its range.
                    transcript = await transcribe_media(
                        self.decoder,
                        self.transcriber,
                        media,
                        video_id,
                        text,
                        self.config.asr.model.model,
                        self.config.limits.clips_in_flight,
                    )
                    given = text.with_transcript(transcript.segments_json)
                rows = await caption_rows(
                    request, self.config, handles, media, video_id, prompt, name, given
                )
                return rows, transcript

            rows, transcript = await self._guard(work())
            return JSONResponse(
                {
                    "video_id": video_id,
                    "model_id": self.config.model.model,
                    "wall_s": round(time.perf_counter() - started, 3),
                    "clips": rows,
                    # None when no speech recognition was asked for (see serve.speech).
                    "transcript": transcript.to_json() if transcript is not None else None,
                }
            )
        except RequestError as exc:
            return exc.response()
        except ClientGone:
            return RequestError(ErrorCode.INVALID_REQUEST, "client disconnected").response()
        finally:
            if slot is not None:
                slot.release()


def build_app(config: ServeConfig):
    """Bind the four deployments (five with ``asr``: the Transcriber) with their own
    autoscaling and admission settings."""
    family, model_type = resolve_family(config.model.model, config.model.revision)
    # The family's frame rules fill what the config leaves unset (frame_factor None).
    config = config.model_copy(
        update={"decode": check_sampling(config.decode, family.hints, model_type)}
    )
    cluster_gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    gpus = cluster_gpus > 0
    captions_decode = config.decode
    # Chat answers about the whole video: one clip, its frames capped by max_frames.
    chat_decode = config.decode.model_copy(update={"chunking": "none"})
    # Fewer GPUs than the two model deployments want: they share (LM the larger part).
    shares = config.model_gpus(cluster_gpus)
    enc_gpus, lm_gpus = shares["encoder"], shares["lm"]
    decoder = Decoder.options(**config.decoder.serve_options(False)).bind(
        captions_decode, chat_decode, config.limits, config.context, config.asr
    )
    encoder = Encoder.options(**config.encoder.serve_options(gpus, enc_gpus)).bind(
        config.model, config.encoder, enc_gpus
    )
    lm = LanguageModel.options(**config.lm.serve_options(gpus, lm_gpus)).bind(
        config.model, config.lm, lm_gpus, config.generation, config.context
    )
    transcriber = None
    if config.asr is not None:
        asr_gpus = shares["asr"]
        transcriber = Transcriber.options(**config.transcriber.serve_options(gpus, asr_gpus)).bind(
            config.asr, config.transcriber, asr_gpus
        )
    return Ingress.options(**config.ingress.serve_options(False)).bind(
        config, decoder, encoder, lm, transcriber
    )


def app_builder(args: dict[str, Any]):
    """Entry point for ``serve run serve.app:app_builder``: args are a ServeConfig dict."""
    return build_app(ServeConfig.model_validate(args or {}))
