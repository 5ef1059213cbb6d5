"""Serve deployments: thin adapters that call the offline job's stages, nothing more.

Each model deployment batches concurrent requests with ``@serve.batch`` and calls the
stage's ``process_batch`` — the very code the Ray Data actors run — so a clip and prompt
give the same text online and offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tempfile
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

import numpy as np
from ray import serve

from pipelines.core.config import (
    AsrConfig,
    ContextConfig,
    DecodeConfig,
    GenerationConfig,
    ModelConfig,
    PoolConfig,
)
from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.records import (
    Ask,
    AudioChunk,
    Caption,
    Clip,
    ClipRef,
    EncodedClip,
    FailedClip,
    VideoTask,
)
from pipelines.stages.audio import TRANSCRIBED, AudioStage
from pipelines.stages.decode import DecodeStage
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GenerateStage
from serve.config import DeploymentConfig, RequestLimits
from serve.context import SOURCES, RequestText
from serve.speech import AudioEnd


class _Stopped(Exception):
    """Raised in the generation thread once the caller of a stream has gone."""


@serve.deployment
class Decoder:
    """Media bytes -> clips, on CPU, with the decode stage's limits, one clip at a time."""

    def __init__(
        self,
        captions: DecodeConfig,
        chat: DecodeConfig,
        limits: RequestLimits,
        context: ContextConfig | None = None,
        asr: AsrConfig | None = None,
    ) -> None:
        # No hard watchdog online: its os._exit would end a replica serving other requests;
        # the decode budget (below the request timeout) bounds each request instead.
        self.stages = {
            "captions": DecodeStage(captions, exit_on_hang=False),
            "chat": DecodeStage(chat, exit_on_hang=False),
        }
        self.limits = limits
        self.context = context or ContextConfig(source="none")
        self.asr = asr
        # A captions request picks its context source: one decode stage per source (they
        # hold only settings), so its clips get their speech by the offline code path.
        self.by_source = {
            s: DecodeStage(
                captions,
                exit_on_hang=False,
                context=self.context.model_copy(update={"source": s}),
            )
            for s in SOURCES
        }

    def _iter(
        self,
        media: bytes,
        mode: str,
        video_id: str,
        prompt: str,
        source: str,
        text: RequestText | None = None,
    ) -> Iterator[Clip | FailedClip]:
        if mode == "image":
            yield self._image(media, video_id, prompt, source)
            return
        with _media_files(media, text) as (path, subtitles):
            task = VideoTask.with_prompt(video_id, path, prompt)
            stage = self.stages[mode]
            if mode == "captions" and text is not None:
                task = _with_text(task, subtitles, text)
                stage = self.by_source[text.source]
            for item in stage.iter_outputs(task):
                yield self._named(item, path, source)

    def _audio_iter(
        self, media: bytes, video_id: str, text: RequestText
    ) -> Iterator[AudioChunk | AudioEnd]:
        if self.asr is None:
            off = StageError(ErrorCode.INVALID_REQUEST, "speech recognition is off", "audio")
            yield AudioEnd("error", off)
            return
        decode = self.stages["captions"].config
        context = self.context.model_copy(update={"source": text.source})
        stage = AudioStage(decode, self.asr, context)
        status, error = TRANSCRIBED, None
        with _media_files(media, text) as (path, subtitles):
            task = _with_text(VideoTask.with_prompt(video_id, path, ""), subtitles, text)
            for piece in stage.iter_outputs(task):
                if piece.chunk is not None:
                    yield piece.chunk
                elif status == TRANSCRIBED:  # the first reason there is no (more) audio
                    status, error = piece.status, piece.error
                    if error is not None:
                        message = error.message.replace(path, "the media")
                        error = StageError(error.code, message, error.stage)
        yield AudioEnd(status, error)

    @staticmethod
    def _named(item: Clip | FailedClip, path: str, source: str) -> Clip | FailedClip:
        # The temp file's path means nothing to the client; report what it sent.
        ref = ClipRef(**{**item.ref.__dict__, "source": source})
        if isinstance(item, Clip):
            return Clip(ref, item.frames, item.decode_s)
        err = item.error
        error = StageError(err.code, err.message.replace(path, "the media"), err.stage)
        return FailedClip(ref, error, item.decode_s)

    def _image(self, media: bytes, video_id: str, prompt: str, source: str) -> Clip | FailedClip:
        from PIL import Image, UnidentifiedImageError

        cfg = self.stages["chat"].config
        ref = ClipRef(video_id, source, (Ask(prompt),), 0, 0.0, 1.0, (0.0,) * cfg.min_frames)

        def failed(code: ErrorCode, message: str) -> FailedClip:
            return FailedClip(ref, StageError(code, message, "decode"))

        formats = list(self.limits.image_formats)
        try:
            # Image.open reads the header only: size and format are known before any pixel
            # is decoded, so a small file declaring a huge canvas costs nothing.
            img = Image.open(io.BytesIO(media), formats=formats)
        except UnidentifiedImageError:
            names = ", ".join(formats)
            return failed(ErrorCode.UNSUPPORTED_FORMAT, f"image is not one of {names}")
        except Image.DecompressionBombError:  # past twice Pillow's own pixel ceiling
            return failed(
                ErrorCode.LIMIT_EXCEEDED,
                f"image exceeds limits.max_image_pixels={self.limits.max_image_pixels}",
            )
        except (OSError, ValueError, SyntaxError) as exc:
            return failed(ErrorCode.CORRUPT, f"image: {type(exc).__name__}")
        pixels = img.width * img.height
        if pixels > self.limits.max_image_pixels:
            return failed(
                ErrorCode.LIMIT_EXCEEDED,
                f"image of {img.width}x{img.height} = {pixels} pixels exceeds "
                f"limits.max_image_pixels={self.limits.max_image_pixels}",
            )
        try:
            img.draft("RGB", (cfg.max_side_px, cfg.max_side_px))  # JPEG: decode downscaled
            img = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
            return failed(ErrorCode.CORRUPT, f"image: {type(exc).__name__}")
        img.thumbnail((cfg.max_side_px, cfg.max_side_px))
        # An image is a video of one frame, repeated to the model's minimum frame count.
        frames = np.repeat(np.asarray(img)[None], cfg.min_frames, axis=0)
        return Clip(ref, frames, 0.0)

    async def clips(
        self,
        media: bytes,
        mode: str,
        video_id: str,
        prompt: str,
        source: str = "",
        text: RequestText | None = None,
    ) -> AsyncIterator[Clip | FailedClip]:
        """Stream the clips (or errors) of ``media``; ``mode`` is captions, chat or image.
        ``text`` (captions): the request's subtitles, context, source and transcript.

        Clips leave one by one, so a request never holds a whole video's frames; when the
        caller stops reading (a limit hit, its client gone) decoding stops too.
        """
        it = self._iter(media, mode, video_id, prompt, source or video_id, text)
        async for item in _from_thread(it):
            yield item

    async def audio(
        self, media: bytes, video_id: str, text: RequestText
    ) -> AsyncIterator[AudioChunk | AudioEnd]:
        """Stream the 16 kHz windows of ``media``'s audio track, then one ``AudioEnd``.

        ``auto`` yields no window for a video whose subtitles (the request's, a text stream
        in the container) give cues: it needs no speech recognition. The loop is the one of
        ``clips``: a window leaves as soon as it is decoded, decoding stops with the caller.
        """
        async for item in _from_thread(self._audio_iter(media, video_id, text)):
            yield item


async def _from_thread(it: Iterator) -> AsyncIterator:
    """Items of a blocking generator, each ``next`` in a worker thread; when the caller stops
    reading, the generator is closed (once the thread is out of ``next``), so decoding stops."""
    step = None
    try:
        while True:
            step = asyncio.get_running_loop().run_in_executor(None, next, it, None)
            item = await step
            if item is None:
                return
            yield item
    finally:
        if step is not None and not step.done():
            # The thread is still inside next(): close the generator once it is out.
            step.add_done_callback(lambda _: it.close())
        else:
            it.close()


@contextlib.contextmanager
def _media_files(media: bytes, text: RequestText | None) -> Iterator[tuple[str, str]]:
    """(media path, subtitles path or '') of temp files holding a request's bytes, removed
    afterwards: the offline stages read files, and so the request's uploads are files too."""
    written: list[str] = []
    try:
        for data, suffix in ((media, ".media"), (text.subtitles if text else b"", ".subtitles")):
            if suffix == ".subtitles" and not data:
                break
            fd, path = tempfile.mkstemp(prefix="vidcap-", suffix=suffix)
            written.append(path)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        yield written[0], written[1] if len(written) > 1 else ""
    finally:
        for path in written:
            os.unlink(path)


def _with_text(task: VideoTask, subtitles: str, text: RequestText) -> VideoTask:
    return VideoTask(
        task.video_id,
        task.source,
        task.asks,
        subtitles=subtitles,
        context=text.context,
        transcript=text.transcript,
    )


def _pool(cfg: DeploymentConfig, num_gpus: float) -> PoolConfig:
    return PoolConfig(
        batch_size=cfg.max_batch_size, num_cpus=max(cfg.num_cpus, 0.01), num_gpus=num_gpus
    )


@serve.deployment
class Encoder:
    def __init__(self, model: ModelConfig, cfg: DeploymentConfig, num_gpus: float) -> None:
        self.stage = EncodeStage(model, _pool(cfg, num_gpus))
        self.stage.setup()
        self.encode.set_max_batch_size(cfg.max_batch_size)
        self.encode.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        self.calls = 0

    @serve.batch
    async def encode(self, clips: list[Clip]) -> list[EncodedClip | StageError]:
        self.calls += 1
        return await asyncio.to_thread(self.stage, clips)

    def stats(self) -> dict:
        return {"batches": self.calls}


@serve.deployment
class LanguageModel:
    def __init__(
        self,
        model: ModelConfig,
        cfg: DeploymentConfig,
        num_gpus: float,
        generation: GenerationConfig,
        context: ContextConfig | None = None,
    ) -> None:
        self.stage = GenerateStage(model, _pool(cfg, num_gpus), generation, context)
        self.stage.setup()
        self.generate.set_max_batch_size(cfg.max_batch_size)
        self.generate.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        # One model, one forward at a time: batches from concurrent requests queue here.
        self._lock = threading.Lock()

    def _run(self, items: list[EncodedClip], settings: GenerationConfig):
        with self._lock:
            return self.stage(items, settings=settings)

    @serve.batch
    async def generate(
        self, requests: list[tuple[EncodedClip, GenerationConfig]]
    ) -> list[Caption | StageError]:
        # Requests in one batch may ask for different decoding settings; each group of
        # equal settings is one generate call.
        groups: dict[GenerationConfig, list[int]] = defaultdict(list)
        for i, (_, settings) in enumerate(requests):
            groups[settings].append(i)
        results: list[Caption | StageError | None] = [None] * len(requests)
        for settings, idx in groups.items():
            outs = await asyncio.to_thread(self._run, [requests[i][0] for i in idx], settings)
            for i, out in zip(idx, outs, strict=True):
                results[i] = out
        return results  # type: ignore[return-value]

    async def stream(self, item: EncodedClip, settings: GenerationConfig) -> AsyncIterator[str]:
        """Yield text pieces as tokens are generated (one request, no batching).

        When the caller goes away (its client disconnected), generation stops at the next
        token instead of running to ``max_new_tokens`` for nobody.
        """
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def on_text(piece: str) -> None:
            if stop.is_set():
                raise _Stopped
            loop.call_soon_threadsafe(queue.put_nowait, piece)

        def produce() -> None:
            try:
                with self._lock:
                    if stop.is_set():
                        return
                    out = self.stage.stream(item, settings, on_text)
                loop.call_soon_threadsafe(queue.put_nowait, out)
            except _Stopped:
                pass
            except BaseException as exc:  # surfaced to the caller below, not swallowed
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        task = loop.run_in_executor(None, produce)
        try:
            while True:
                piece = await queue.get()
                if isinstance(piece, BaseException):
                    raise piece
                yield piece
                if not isinstance(piece, str):
                    break
            await task
        finally:
            stop.set()
