"""Speech recognition online: Decoder (audio windows) -> Transcriber -> segments, by handles.

When the endpoint has ``asr`` and a captions request's source is ``auto`` or
``transcript``, the ingress transcribes the video *before* decoding its clips: a clip's
prompt holds the speech of its time range, which needs the whole transcript (offline, the
speech-recognition pass runs before the caption pass for the same reason).

- The ``Decoder`` streams the audio track as overlapping 16 kHz windows (the offline
  ``AudioStage``, CPU); at most ``limits.clips_in_flight`` windows wait for the
  ``Transcriber`` at once, so a long track is never held whole.
- The ``Transcriber`` batches windows of concurrent requests with ``@serve.batch`` and calls
  the offline ``TranscribeStage`` (Whisper); ``merge_chunks`` joins a video's windows.
- A video without audio, or whose audio fails, is still captioned, without speech: the
  answer's ``transcript`` says why (``status`` ``error``, ``error_code`` such as
  ``no_audio_stream``), for ``auto`` and ``transcript`` alike. ``auto`` with subtitles
  transcribes nothing (``status`` ``subtitles``).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from ray import serve
from ray.serve.handle import DeploymentHandle

from pipelines.core.config import AsrConfig, PoolConfig
from pipelines.core.errors import StageError
from pipelines.core.records import AudioChunk, ChunkTranscript, Segment, segments_to_json
from pipelines.stages.transcribe import TranscribeStage, merge_chunks
from serve.config import DeploymentConfig
from serve.context import RequestText


@dataclass(frozen=True)
class AudioEnd:
    """The last item of ``Decoder.audio``: ``transcribed`` (every window was sent),
    ``subtitles`` (``auto`` and the video has subtitles) or ``error`` (with the error)."""

    status: str
    error: StageError | None = None


@dataclass(frozen=True)
class Transcript:
    """A request's transcript, as the captions answer reports it (the offline
    ``transcripts/`` row's fields, less the plan columns)."""

    status: str
    model_id: str
    segments: tuple[Segment, ...] = ()
    language: str = ""
    audio_s: float = 0.0
    windows: int = 0
    asr_s: float = 0.0
    error: StageError | None = None

    @property
    def segments_json(self) -> str:
        return segments_to_json(self.segments)

    def to_json(self) -> dict:
        err = self.error
        return {
            "status": self.status,
            "language": self.language,
            "segments": [
                {"start_s": s.start_s, "end_s": s.end_s, "text": s.text} for s in self.segments
            ],
            "text": "\n".join(s.text for s in self.segments),
            "audio_s": round(self.audio_s, 3),
            "windows": self.windows,
            "asr_s": round(self.asr_s, 3),
            "model_id": self.model_id,
            "error_code": err.code.value if err else "",
            "error_message": err.message if err else "",
        }


@serve.deployment
class Transcriber:
    """Audio windows -> the segments each window owns (Whisper), batched across requests."""

    def __init__(self, asr: AsrConfig, cfg: DeploymentConfig, num_gpus: float) -> None:
        pool = PoolConfig(
            batch_size=cfg.max_batch_size, num_cpus=max(cfg.num_cpus, 0.01), num_gpus=num_gpus
        )
        self.stage = TranscribeStage(asr.model_copy(update={"pool": pool}))
        self.stage.setup()
        self.transcribe.set_max_batch_size(cfg.max_batch_size)
        self.transcribe.set_batch_wait_timeout_s(cfg.batch_wait_timeout_s)

    @serve.batch
    async def transcribe(self, chunks: list[AudioChunk]) -> list[ChunkTranscript | StageError]:
        return await asyncio.to_thread(self.stage, chunks)


async def transcribe_media(
    decoder: DeploymentHandle,
    transcriber: DeploymentHandle,
    media: bytes,
    video_id: str,
    text: RequestText,
    model_id: str,
    in_flight: int,
) -> Transcript:
    """The video's transcript; a window that fails keeps the others' segments (as offline)
    and makes the status ``error`` with the first failure."""
    stream = decoder.options(stream=True).audio.remote(media, video_id, text)
    windows: list[asyncio.Future] = []
    pending: set[asyncio.Future] = set()
    end = AudioEnd("transcribed")
    audio_s = 0.0

    async def run(chunk: AudioChunk) -> ChunkTranscript | StageError:
        return await transcriber.transcribe.remote(chunk)

    try:
        async for item in stream:
            if isinstance(item, AudioEnd):
                end = item
                continue
            audio_s = max(audio_s, item.end_s)
            while len(pending) >= in_flight:
                _, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            task = asyncio.ensure_future(run(item))
            pending.add(task)
            windows.append(task)
        results = [await t for t in windows]
    finally:
        stream.cancel()
        for t in windows:
            t.cancel()
    done = [r for r in results if isinstance(r, ChunkTranscript)]
    failed = next((r for r in results if isinstance(r, StageError)), None)
    error = end.error or failed
    languages = Counter(r.language for r in done if r.language)
    return Transcript(
        status="error" if error is not None else end.status,
        model_id=model_id,
        segments=merge_chunks(done),
        language=languages.most_common(1)[0][0] if languages else "",
        audio_s=audio_s,
        windows=len(windows),
        asr_s=sum(r.asr_s for r in done),
        error=error,
    )
