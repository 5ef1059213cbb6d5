"""Serve deployments: thin adapters that call the offline job's stages, nothing more.

Each model deployment batches concurrent requests with ``@serve.batch`` and calls the
stage's ``process_batch`` — the very code the Ray Data actors run — so a clip and prompt
give the same text online and offline.
"""

from __future__ import annotations

import asyncio
import io
import os
import tempfile
import threading
from collections import defaultdict
from collections.abc import AsyncIterator
from functools import partial

import numpy as np
from ray import serve

from pipelines.config import DecodeConfig, GenerationConfig, ModelConfig, PoolConfig
from pipelines.errors import ErrorCode, StageError
from pipelines.records import Ask, Caption, Clip, ClipRef, EncodedClip, FailedClip, VideoTask
from pipelines.stages.decode import DecodeStage
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GenerateStage
from serve.config import DeploymentConfig


@serve.deployment
class Decoder:
    """Media bytes -> clips, on CPU, with the decode stage's limits."""

    def __init__(self, captions: DecodeConfig, chat: DecodeConfig) -> None:
        self.stages = {"captions": DecodeStage(captions), "chat": DecodeStage(chat)}

    def _decode(
        self, media: bytes, mode: str, video_id: str, prompt: str, source: str
    ) -> list[Clip | FailedClip]:
        stage = self.stages[mode]
        fd, path = tempfile.mkstemp(prefix="vidcap-", suffix=".media")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(media)
            task = VideoTask.with_prompt(video_id, path, prompt)
            return [self._named(c, source) for c in stage.iter_outputs(task)]
        finally:
            os.unlink(path)

    @staticmethod
    def _named(item: Clip | FailedClip, source: str) -> Clip | FailedClip:
        # The temp file's path means nothing to the client; report what it sent.
        ref = ClipRef(**{**item.ref.__dict__, "source": source})
        if isinstance(item, Clip):
            return Clip(ref, item.frames, item.decode_s)
        return FailedClip(ref, item.error, item.decode_s)

    def _image(
        self, media: bytes, video_id: str, prompt: str, source: str
    ) -> list[Clip | FailedClip]:
        from PIL import Image, UnidentifiedImageError

        cfg = self.stages["chat"].config
        ref = ClipRef(video_id, source, (Ask(prompt),), 0, 0.0, 1.0, (0.0,) * cfg.min_frames)
        try:
            img = Image.open(io.BytesIO(media)).convert("RGB")
        except (UnidentifiedImageError, OSError) as exc:
            return [FailedClip(ref, StageError(ErrorCode.CORRUPT, f"image: {exc}", "decode"))]
        img.thumbnail((cfg.max_side_px, cfg.max_side_px))
        # An image is a video of one frame, repeated to the model's minimum frame count.
        frames = np.repeat(np.asarray(img)[None], cfg.min_frames, axis=0)
        return [Clip(ref, frames, 0.0)]

    async def decode(self, media: bytes, mode: str, video_id: str, prompt: str, source: str = ""):
        """Clips (or errors) of ``media``; ``mode`` is captions (windows), chat or image."""
        run = self._image if mode == "image" else partial(self._decode, mode=mode)
        return await asyncio.to_thread(
            run, media, video_id=video_id, prompt=prompt, source=source or video_id
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
    ) -> None:
        self.stage = GenerateStage(model, _pool(cfg, num_gpus), generation)
        self.stage.setup()
        self.generate.set_max_batch_size(cfg.max_batch_size)
        self.generate.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)
        # One model, one forward at a time: batches from concurrent requests queue here.
        self._lock = threading.Lock()

    def _run(self, items: list[EncodedClip], settings: GenerationConfig):
        with self._lock:
            return self.stage.process_with(items, settings)

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
        """Yield text pieces as tokens are generated (one request, no batching)."""
        queue: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def produce() -> None:
            try:
                with self._lock:
                    out = self.stage.stream(
                        item,
                        settings,
                        lambda piece: loop.call_soon_threadsafe(queue.put_nowait, piece),
                    )
                loop.call_soon_threadsafe(queue.put_nowait, out)
            except BaseException as exc:  # surfaced to the caller below, not swallowed
                loop.call_soon_threadsafe(queue.put_nowait, exc)

        task = loop.run_in_executor(None, produce)
        while True:
            piece = await queue.get()
            if isinstance(piece, BaseException):
                raise piece
            yield piece
            if not isinstance(piece, str):
                break
        await task
