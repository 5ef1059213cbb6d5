"""The transcribe stage keeps each segment once across overlapping windows, in absolute time."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.config import AsrConfig, DecodeConfig, ModelConfig, PoolConfig
from pipelines.core.errors import StageError
from pipelines.core.records import AudioChunk, ChunkTranscript, Segment
from pipelines.core.stage import Resources
from pipelines.media import synth_audio
from pipelines.media.audio import iter_audio_windows
from pipelines.models.whisper import WindowSegment, WindowTranscript, build_tiny_whisper
from pipelines.stages.transcribe import TranscribeStage, merge_chunks, owned


def chunk(index: int, start_s: float, end_s: float, own: tuple[float, float]) -> AudioChunk:
    return AudioChunk("v", index, start_s, end_s, own[0], own[1], np.zeros(0, np.float32))


# 70 s in 30 s windows overlapping by 5 s (what iter_audio_windows cuts).
CHUNKS = [
    chunk(0, 0.0, 30.0, (0.0, 27.5)),
    chunk(1, 25.0, 55.0, (27.5, 52.5)),
    chunk(2, 50.0, 70.0, (52.5, 70.0)),
]


def heard(c: AudioChunk, *segments: tuple[float, float, str]) -> WindowTranscript:
    """What a window heard: the given absolute segments, as window-relative ones."""
    inside = [
        WindowSegment(a - c.start_s, b - c.start_s, t)
        for a, b, t in segments
        if a < c.end_s and b > c.start_s
    ]
    return WindowTranscript((1, 2, 3), "en", tuple(inside))


SPEECH = [
    (1.0, 4.0, "one"),
    (26.0, 27.0, "in the first overlap, first half"),  # middle 26.5: chunk 0
    (27.0, 29.0, "across the boundary"),  # middle 28.0: chunk 1
    (27.0, 28.0, "ends on the boundary"),  # middle 27.5: the later chunk
    (40.0, 44.0, "two"),
    (51.0, 54.0, "second overlap"),  # middle 52.5: chunk 2
    (69.0, 70.0, "the very end"),
]


def test_each_segment_is_kept_once_by_the_chunk_owning_its_middle():
    transcripts = [owned(c, heard(c, *SPEECH)) for c in CHUNKS]
    assert [[s.text for s in t.segments] for t in transcripts] == [
        ["one", "in the first overlap, first half"],
        ["across the boundary", "ends on the boundary", "two"],
        ["second overlap", "the very end"],
    ]
    merged = merge_chunks(transcripts)
    assert merged == tuple(
        Segment(a, b, t) for a, b, t in sorted(SPEECH, key=lambda s: (s[0], s[1]))
    )


def test_a_segment_ending_at_the_tracks_end_is_owned():
    last = CHUNKS[2]
    point = WindowTranscript((), "", (WindowSegment(20.0, 20.0, "x"),))  # at 70.0 exactly
    assert owned(last, point).segments == (Segment(70.0, 70.0, "x"),)
    # ...but one on the own-range boundary between two windows belongs to the later one.
    boundary = WindowTranscript((), "", (WindowSegment(27.5, 27.5, "y"),))
    assert owned(CHUNKS[0], boundary).segments == ()
    assert owned(CHUNKS[1], heard(CHUNKS[1], (27.5, 27.5, "y"))).segments == (
        Segment(27.5, 27.5, "y"),
    )


def test_merge_orders_by_chunk_index_and_time_and_drops_blank_text():
    def t(index: int, *segs: Segment) -> ChunkTranscript:
        return ChunkTranscript("v", index, segs, ())

    merged = merge_chunks(
        [
            t(2, Segment(60, 61, "e")),
            t(0, Segment(5, 6, "b"), Segment(1, 2, "a"), Segment(7, 8, "  ")),
            t(1, Segment(30, 31, "c"), Segment(40, 41, "")),
        ]
    )
    assert [s.text for s in merged] == ["a", "b", "c", "e"]
    assert merge_chunks([]) == ()


def test_construction_is_cheap_and_declares_its_pool(tmp_path):
    config = AsrConfig(
        model=ModelConfig(model=str(tmp_path / "not-built")),
        pool=PoolConfig(batch_size=3, num_cpus=2, num_gpus=None),
    )
    stage = TranscribeStage(config)
    assert stage.name == "transcribe" and stage.stateful and stage.batch_size == 3
    assert stage.resources == Resources(num_cpus=2, num_gpus=0.0)
    gpu = TranscribeStage(config.model_copy(update={"pool": PoolConfig(num_gpus=0.5)}))
    assert gpu.resources.num_gpus == 0.5
    with pytest.raises(RuntimeError, match="setup"):
        stage.process_batch([CHUNKS[0]])


@pytest.fixture(scope="module")
def speech_video(tmp_path_factory) -> str:
    """40 s of tones (a step every 10 s) with a video stream starting 1 s after the audio."""
    path = tmp_path_factory.mktemp("asr-media") / "talk.mkv"
    tones = ((1.0, 300.0), (10.0, 500.0), (10.0, 900.0), (10.0, 1500.0), (10.0, 700.0))
    synth_audio.write_video_with_audio(
        path, tones=tones, video_start_s=1.0, container_format="matroska"
    )
    return str(path)


def test_end_to_end_on_synthesized_audio(speech_video, tmp_path):
    config = AsrConfig(
        model=ModelConfig(model=str(build_tiny_whisper(tmp_path / "whisper"))),
        pool=PoolConfig(batch_size=2),
        window_s=20.0,
        overlap_s=4.0,
        max_new_tokens=24,
    )
    stage = TranscribeStage(config)
    stage.setup()
    chunks = list(
        iter_audio_windows(
            speech_video,
            DecodeConfig(),
            "key",
            window_s=config.window_s,
            overlap_s=config.overlap_s,
        )
    )
    assert [(c.start_s, c.end_s) for c in chunks[:2]] == [(0.0, 20.0), (16.0, 36.0)]
    assert chunks[2].start_s == 32.0 and chunks[2].end_s == pytest.approx(40.0, abs=0.07)
    results = []
    for i in range(0, len(chunks), stage.batch_size):
        results += stage(chunks[i : i + stage.batch_size])
    assert not [r for r in results if isinstance(r, StageError)]
    assert [(r.video_key, r.index) for r in results] == [("key", 0), ("key", 1), ("key", 2)]
    for c, r in zip(chunks, results, strict=True):
        assert r.token_ids and r.language and r.asr_s > 0
        for seg in r.segments:  # absolute times, middle inside the chunk's own range
            assert c.start_s <= seg.start_s <= seg.end_s <= c.end_s
            assert c.own_start_s <= (seg.start_s + seg.end_s) / 2 <= c.own_end_s
    merged = merge_chunks(results)
    assert merged == tuple(s for r in results for s in r.segments if s.text.strip())
    assert merged  # the tiny model hears something in every window
    track_end_s = chunks[-1].end_s
    for seg in merged:
        assert 0.0 <= seg.start_s <= seg.end_s <= track_end_s and seg.text
