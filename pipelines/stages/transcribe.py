"""Speech-recognition stage: audio windows -> the segments each window owns.

Windows overlap (``media.audio``), so a segment near a window edge is heard twice. Each
chunk keeps only the segments whose middle lies in its own range; the own ranges tile the
track, so ``merge_chunks`` can simply concatenate a video's chunks in order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pipelines.core.config import AsrConfig
from pipelines.core.errors import StageError
from pipelines.core.records import AudioChunk, ChunkTranscript, Segment, segments_to_json
from pipelines.core.stage import MapStage, Resources, RowCodec
from pipelines.models.whisper import WhisperAsr, WindowTranscript
from pipelines.stages.audio import TRANSCRIBED
from pipelines.stages.isolate import run_isolated


def chunk_from_row(row: Mapping[str, Any]) -> AudioChunk:
    return AudioChunk(
        video_key=str(row["video_key"]),
        index=int(row["index"]),
        start_s=float(row["start_s"]),
        end_s=float(row["end_s"]),
        own_start_s=float(row["own_start_s"]),
        own_end_s=float(row["own_end_s"]),
        samples=np.asarray(row["samples"], dtype=np.float32),
    )


def transcript_update(out: ChunkTranscript) -> dict[str, Any]:
    return {
        "segments": segments_to_json(out.segments),
        "language": out.language,
        "asr_s": out.asr_s,
    }


def wants_asr(row: Mapping[str, Any]) -> bool:
    """Only audio windows: a video's ``subtitles`` or ``error`` piece passes through."""
    return str(row["status"]) == TRANSCRIBED


class TranscribeStage(MapStage[AudioChunk, ChunkTranscript]):
    """Whisper on a pool of actors; construction loads nothing (``setup`` does)."""

    name = "transcribe"
    codec = RowCodec(chunk_from_row, transcript_update, consumed="samples", takes=wants_asr)

    def __init__(self, config: AsrConfig) -> None:
        self.config = config
        self.batch_size = config.pool.batch_size
        self._asr: WhisperAsr | None = None

    @property
    def asr(self) -> WhisperAsr:
        if self._asr is None:
            raise RuntimeError(f"stage {self.name!r} has no model loaded: call setup() first")
        return self._asr

    @property
    def resources(self) -> Resources:
        pool = self.config.pool
        return Resources(num_cpus=pool.num_cpus, num_gpus=pool.num_gpus or 0.0)

    @property
    def stateful(self) -> bool:
        return True

    def setup(self) -> None:
        import torch

        torch.set_grad_enabled(False)
        asr = WhisperAsr(self.config)
        asr.load()
        self._asr = asr

    def process_batch(
        self, items: Sequence[AudioChunk], **options: Any
    ) -> list[ChunkTranscript | StageError]:
        started = time.perf_counter()
        outputs = run_isolated(self.asr.transcribe, [c.samples for c in items], self.name)
        per_item_s = (time.perf_counter() - started) / max(1, len(items))
        return [
            out if isinstance(out, StageError) else owned(chunk, out, per_item_s)
            for chunk, out in zip(items, outputs, strict=True)
        ]


def owned(chunk: AudioChunk, window: WindowTranscript, asr_s: float = 0.0) -> ChunkTranscript:
    """The chunk's result: the window's segments whose middle lies in the chunk's own range
    (half-open, so a middle on a boundary belongs to the later chunk), in absolute time."""
    segments = []
    for seg in window.segments:
        start_s, end_s = chunk.start_s + seg.start_s, chunk.start_s + seg.end_s
        middle_s = (start_s + end_s) / 2
        last = middle_s == chunk.own_end_s == chunk.end_s  # the track's very end is owned
        if chunk.own_start_s <= middle_s < chunk.own_end_s or last:
            segments.append(Segment(start_s, end_s, seg.text))
    return ChunkTranscript(
        video_key=chunk.video_key,
        index=chunk.index,
        segments=tuple(segments),
        token_ids=window.token_ids,
        language=window.language,
        asr_s=asr_s,
    )


def merge_chunks(transcripts: Sequence[ChunkTranscript]) -> tuple[Segment, ...]:
    """One video's segments: its chunks in index order, their segments in time order,
    blank ones dropped. Chunks own disjoint ranges, so nothing is kept twice."""
    segments = [
        seg
        for chunk in sorted(transcripts, key=lambda t: t.index)
        for seg in sorted(chunk.segments, key=lambda s: (s.start_s, s.end_s))
        if seg.text.strip()
    ]
    return tuple(segments)
