"""Audio decode: one video in, a stream of 16 kHz mono windows out (the ASR pass's fan-out).

It runs on the CPU decode tasks, like the video decoder, and under the same rules: bad input
becomes a typed result (``no_audio_stream``, ``corrupt``, ...), never an exception, and a video
that kills its worker on every allowed attempt is quarantined while the rest of its work unit
completes (the run's unit-attempt ledger, keyed apart from the video decoder's units).

A video that already has subtitles needs no speech recognition when the context source is
``auto``: it yields one ``subtitles`` piece and no audio at all.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import av
import numpy as np

from pipelines.core.config import AsrConfig, ContextConfig, DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError, StageError
from pipelines.core.faults import UnitAttempt, UnitLedger, maybe_crash, quarantine_code
from pipelines.core.records import AudioChunk, VideoTask
from pipelines.core.stage import FanOutStage, Resources, RowCodec
from pipelines.media.audio import iter_audio_windows
from pipelines.stages.speech import VideoSpeech

TRANSCRIBED, SUBTITLES, FAILED = "transcribed", "subtitles", "error"


@dataclass(frozen=True)
class AudioPiece:
    """One output of the audio stage: a window to transcribe, or the video's only piece
    saying why it has none (``status`` ``subtitles`` or ``error``)."""

    task: VideoTask
    chunk: AudioChunk | None
    status: str = TRANSCRIBED
    error: StageError | None = None
    chunks: int = 0
    """On the video's last piece: how many pieces the video has (the writer's completion
    count); 0 on the others."""
    attempt: int = 0
    decode_s: float = 0.0


def piece_row(piece: AudioPiece) -> dict[str, Any]:
    """An audio piece as a row: the video's task columns, the window, its samples."""
    chunk, err = piece.chunk, piece.error
    return {
        **piece.task.to_row(),
        "status": piece.status,
        "index": chunk.index if chunk else -1,
        "start_s": chunk.start_s if chunk else 0.0,
        "end_s": chunk.end_s if chunk else 0.0,
        "own_start_s": chunk.own_start_s if chunk else 0.0,
        "own_end_s": chunk.own_end_s if chunk else 0.0,
        "samples": chunk.samples if chunk else np.zeros(0, np.float32),
        "chunks": piece.chunks,
        "attempt": piece.attempt,
        "decode_s": piece.decode_s,
        "segments": "",
        "language": "",
        "asr_s": 0.0,
        "error_code": err.code.value if err else "",
        "error_message": err.message if err else "",
        "error_stage": err.stage if err else "",
    }


class AudioStage(FanOutStage[VideoTask, AudioPiece]):
    name = "audio"
    codec = RowCodec(VideoTask.from_row, piece_row)

    def __init__(
        self,
        decode: DecodeConfig,
        asr: AsrConfig,
        context: ContextConfig,
        num_cpus: float = 1.0,
        attempts: UnitLedger | None = None,
        max_attempts: int = 3,
    ) -> None:
        self.decode, self.asr, self.context = decode, asr, context
        self._resources = Resources(num_cpus=num_cpus)
        self.attempts, self.max_attempts = attempts, max_attempts
        self._unit: UnitAttempt | None = None
        self._index: dict[str, int] = {}

    @property
    def resources(self) -> Resources:
        return self._resources

    def begin_unit(self, items: Sequence[VideoTask]) -> None:
        if self.attempts is None:
            return
        # Apart from the video decoder's units of the same videos: its deaths are not ours.
        self._unit = self.attempts.start_unit([f"audio:{t.video_key}" for t in items])
        self._index = {t.video_key: i for i, t in enumerate(items)}

    def end_unit(self) -> None:
        if self.attempts is not None and self._unit is not None:
            self.attempts.finish_unit()
        self._unit = None

    def iter_outputs(self, item: VideoTask) -> Iterator[AudioPiece]:
        attempt = self._unit.attempt if self._unit is not None else 0
        if self._unit is not None:
            deaths = self._unit.deaths.get(f"audio:{item.video_key}")
            if deaths is not None and deaths.count >= self.max_attempts:
                message = f"quarantined after {deaths.count} attempts that each killed the worker"
                error = StageError(quarantine_code(deaths.reasons), message, self.name)
                yield AudioPiece(item, None, FAILED, error, chunks=1, attempt=attempt)
                return
            self.attempts.working_on(self._index[item.video_key])
        if self.context.source == "auto" and VideoSpeech.of(item, self.context, self.decode).cues:
            yield AudioPiece(item, None, SUBTITLES, chunks=1, attempt=attempt)
            return
        previous: AudioPiece | None = None
        count = 0
        for piece in self._pieces(item, attempt):
            if previous is not None:
                yield previous
            previous, count = piece, count + 1
        if previous is None:  # an audio stream without a single sample
            error = StageError(ErrorCode.EMPTY, "the audio stream holds no sample", self.name)
            previous, count = AudioPiece(item, None, FAILED, error, attempt=attempt), 1
        yield replace(previous, chunks=count)

    def _pieces(self, item: VideoTask, attempt: int) -> Iterator[AudioPiece]:
        maybe_crash(item.source)
        started = time.perf_counter()
        try:
            for chunk in iter_audio_windows(
                item.source,
                self.decode,
                video_key=item.video_key,
                window_s=self.asr.window_s,
                overlap_s=self.asr.overlap_s,
            ):
                now = time.perf_counter()
                yield AudioPiece(item, chunk, attempt=attempt, decode_s=now - started)
                started = time.perf_counter()
        except MediaError as exc:
            error = StageError(exc.code, exc.message, self.name)
            yield AudioPiece(item, None, FAILED, error, attempt=attempt)
        except av.error.FFmpegError as exc:
            error = StageError(ErrorCode.CORRUPT, f"FFmpeg: {exc}", self.name)
            yield AudioPiece(item, None, FAILED, error, attempt=attempt)
        except MemoryError:
            if self._unit is not None:
                self.attempts.reason("oom")
            raise
