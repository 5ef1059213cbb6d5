"""The tiny Whisper loads like a hub checkpoint, the recognizer's tokens are generate's
tokens, and any token sequence decodes to valid window-relative segments."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration, WhisperProcessor

from pipelines.core.config import AsrConfig, ModelConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.records import AudioChunk, ChunkTranscript
from pipelines.models.base import ItemError
from pipelines.models.whisper import (
    AUDIO_RATE,
    NUM_TIMESTAMPS,
    WhisperAsr,
    WindowSegment,
    build_tiny_whisper,
    decode_segments,
)
from pipelines.stages.transcribe import TranscribeStage

MAX_NEW_TOKENS = 16


@pytest.fixture(scope="module")
def whisper_dir(tmp_path_factory) -> str:
    return str(build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper")))


def asr_config(path: str, **extra) -> AsrConfig:
    return AsrConfig(model=ModelConfig(model=path), max_new_tokens=MAX_NEW_TOKENS, **extra)


@pytest.fixture(scope="module")
def asr(whisper_dir) -> WhisperAsr:
    asr = WhisperAsr(asr_config(whisper_dir))
    asr.load()
    return asr


def windows() -> list[np.ndarray]:
    """Three windows of different content and lengths (the last one is silence)."""
    t = np.arange(30 * AUDIO_RATE) / AUDIO_RATE
    rng = np.random.default_rng(0)
    return [
        (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
        (0.1 * rng.standard_normal(12 * AUDIO_RATE)).astype(np.float32),
        np.zeros(5 * AUDIO_RATE, np.float32),
    ]


@pytest.fixture(scope="module")
def batch(asr) -> list:
    """``asr.transcribe(windows())``, computed once (generate is the slow part)."""
    return asr.transcribe(windows())


def until_eos(row: list[int], eos: int) -> tuple[int, ...]:
    return tuple(row[: row.index(eos)] if eos in row else row)


# ------------------------------------------------------------------------ the checkpoint


def test_tiny_whisper_loads_like_a_hub_checkpoint(whisper_dir):
    processor = WhisperProcessor.from_pretrained(whisper_dir)
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir)
    tok, gen = processor.tokenizer, model.generation_config
    assert model.config.model_type == "whisper"
    assert model.config.max_source_positions == 1500 and model.config.max_target_positions == 448
    assert processor.feature_extractor.feature_size == model.config.num_mel_bins
    assert model.config.vocab_size == len(tok)
    ids = tok.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    for name in ("<|startoftranscript|>", "<|en|>", "<|de|>", "<|fr|>", "<|translate|>"):
        assert ids(name) > eos
    for name in ("<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>"):
        assert ids(name) > eos
    # Timestamps follow <|notimestamps|>, the last special id, as generate expects.
    notimestamps = ids("<|notimestamps|>")
    assert tok.all_special_ids[-1] == notimestamps == gen.no_timestamps_token_id
    stamps = [ids(f"<|{i * 0.02:.2f}|>") for i in range(NUM_TIMESTAMPS)]
    assert stamps == list(range(notimestamps + 1, notimestamps + 1 + NUM_TIMESTAMPS))
    assert stamps[-1] == len(tok) - 1 and tok.convert_ids_to_tokens(stamps[-1]) == "<|30.00|>"
    assert gen.decoder_start_token_id == ids("<|startoftranscript|>")
    assert gen.lang_to_id["<|de|>"] == ids("<|de|>") and gen.is_multilingual
    assert gen.task_to_id == {
        "translate": ids("<|translate|>"),
        "transcribe": ids("<|transcribe|>"),
    }
    assert gen.forced_decoder_ids is None and gen.begin_suppress_tokens
    # Text round-trips through the byte-level BPE.
    text = " Hello, today we look at something new."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_build_is_seeded(whisper_dir, tmp_path):
    again = WhisperForConditionalGeneration.from_pretrained(build_tiny_whisper(tmp_path / "a"))
    first = WhisperForConditionalGeneration.from_pretrained(whisper_dir)
    other = WhisperForConditionalGeneration.from_pretrained(build_tiny_whisper(tmp_path / "b", 1))
    for (name, a), b in zip(first.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert not torch.equal(first.proj_out.weight, other.proj_out.weight)


# ------------------------------------------------------------------------------- parity


def test_tokens_equal_generate_called_directly(asr, batch, whisper_dir):
    got = batch
    processor = WhisperProcessor.from_pretrained(whisper_dir)
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    features = processor.feature_extractor(windows(), sampling_rate=AUDIO_RATE, return_tensors="pt")
    with torch.inference_mode():
        rows = model.generate(
            features.input_features,
            return_timestamps=True,
            task="transcribe",
            language=None,
            max_new_tokens=MAX_NEW_TOKENS,
            force_unique_generate_call=True,
        ).tolist()
    eos = model.generation_config.eos_token_id
    expected = [until_eos(row, eos) for row in rows]
    assert [w.token_ids for w in got] == expected
    assert len(set(expected)) == len(expected), "windows of different content, same tokens"
    # A window alone gives what it gives in the batch.
    assert asr.transcribe(windows()[1:2])[0].token_ids == expected[1]


def test_results_are_valid_for_any_model_output(asr, batch):
    for window, result in zip(windows(), batch, strict=True):
        window_s = len(window) / AUDIO_RATE
        assert result.token_ids[0] == asr.model.generation_config.decoder_start_token_id
        for seg in result.segments:
            assert 0.0 <= seg.start_s <= seg.end_s <= window_s
            assert seg.text and seg.text == seg.text.strip()


# --------------------------------------------------------------------------- languages


def test_language_detected_per_window(asr, batch):
    ids = asr.processor.tokenizer.convert_tokens_to_ids
    for result in batch:
        assert result.language and ids(f"<|{result.language}|>") == result.token_ids[1]


@pytest.mark.parametrize("language", ["de", "german"])
def test_language_given(whisper_dir, language):
    given = WhisperAsr(asr_config(whisper_dir, language=language))
    given.load()
    results = given.transcribe(windows()[1:])
    de = given.processor.tokenizer.convert_tokens_to_ids("<|de|>")
    assert [r.language for r in results] == ["de", "de"]
    assert all(r.token_ids[1] == de for r in results)


# ---------------------------------------------------------------------------- bad input


def test_a_bad_window_is_only_its_own_error(asr, batch):
    good = windows()
    mixed = [good[0], np.full(AUDIO_RATE, np.nan, np.float32), good[1], np.zeros(0, np.float32)]
    mixed.append(np.zeros(31 * AUDIO_RATE, np.float32))
    results = asr.transcribe(mixed)
    assert [type(r).__name__ for r in results] == [
        "WindowTranscript", "StageError", "WindowTranscript", "StageError", "StageError",
    ]  # fmt: skip
    assert all(r.code == ErrorCode.MODEL_ERROR and r.stage == "transcribe" for r in results[1::2])
    assert [results[0].token_ids, results[2].token_ids] == [c.token_ids for c in batch[:2]]


def test_a_window_the_extractor_refuses_raises_item_error(asr):
    with pytest.raises(ItemError, match="audio window"):
        asr.transcribe([windows()[0], np.zeros((2, AUDIO_RATE), np.float32)])


def test_the_stage_isolates_a_refused_window(whisper_dir, batch):
    stage = TranscribeStage(asr_config(whisper_dir))
    stage.setup()

    def chunk(i: int, samples: np.ndarray) -> AudioChunk:
        return AudioChunk("v", i, 0.0, 30.0, 0.0, 30.0, samples)

    good = windows()
    stereo = np.zeros((2, AUDIO_RATE), np.float32)
    results = stage([chunk(0, good[0]), chunk(1, stereo), chunk(2, good[2])])
    assert isinstance(results[0], ChunkTranscript) and isinstance(results[2], ChunkTranscript)
    assert isinstance(results[1], StageError) and results[1].code == ErrorCode.MODEL_ERROR
    assert "audio window" in results[1].message
    assert [results[0].token_ids, results[2].token_ids] == [batch[0].token_ids, batch[2].token_ids]


# ------------------------------------------------------------------ timestamp decoding

TS = 1000  # timestamp_begin of the hand-made sequences: <|t|> is TS + t / 0.02
EOS = 500  # ids below are text, EOS..TS-1 special


def ts(seconds: float) -> int:
    return TS + round(seconds / 0.02)


def decode(ids, window_s: float = 30.0):
    return decode_segments(
        ids,
        timestamp_begin=TS,
        text_end=EOS,
        window_s=window_s,
        decode=lambda t: " ".join(f"w{i}" for i in t),
    )


def test_pairs_give_segments():
    ids = [ts(0), 1, 2, ts(2.5), ts(2.5), 3, ts(4), ts(4.2), 4, ts(6), EOS, 9]
    assert decode(ids) == (
        WindowSegment(0.0, 2.5, "w1 w2"),
        WindowSegment(2.5, 4.0, "w3"),
        WindowSegment(4.2, 6.0, "w4"),
    )


def test_single_timestamps_between_texts_chain():
    assert decode([ts(1), 1, ts(2), 2, ts(3)]) == (
        WindowSegment(1.0, 2.0, "w1"),
        WindowSegment(2.0, 3.0, "w2"),
    )


def test_missing_close_ends_at_the_window_end():
    assert decode([ts(0), 1, ts(3), ts(3), 2, 3], window_s=12.0) == (
        WindowSegment(0.0, 3.0, "w1"),
        WindowSegment(3.0, 12.0, "w2 w3"),
    )


def test_no_timestamps_is_one_segment_over_the_window():
    assert decode([1, 2, 3], window_s=7.5) == (WindowSegment(0.0, 7.5, "w1 w2 w3"),)


def test_empty_and_special_only_sequences():
    assert decode([]) == ()
    assert decode([ts(0), ts(1), EOS]) == ()
    assert decode([EOS, 1, 2]) == ()
    # Special tokens inside the text (a language token, <|nospeech|>) are not text.
    assert decode([ts(0), 1, EOS + 7, 2, ts(1)]) == (WindowSegment(0.0, 1.0, "w1 w2"),)


def test_blank_text_is_dropped():
    blank = decode_segments(
        [TS, 1, ts(1), ts(1), 2, ts(2)],
        timestamp_begin=TS,
        text_end=EOS,
        window_s=30.0,
        decode=lambda t: "  " if t == [1] else "x",
    )
    assert blank == (WindowSegment(1.0, 2.0, "x"),)


def test_non_monotonic_and_out_of_window_timestamps_stay_valid():
    segs = decode([ts(5), 1, ts(2), ts(29), 2, ts(30), ts(1), 3, ts(3)], window_s=10.0)
    assert segs == (
        WindowSegment(5.0, 5.0, "w1"),  # an end before its start is moved up to the start
        WindowSegment(10.0, 10.0, "w2"),  # times past the window are clamped to its end
        WindowSegment(1.0, 3.0, "w3"),
    )
    for seg in segs:
        assert 0.0 <= seg.start_s <= seg.end_s <= 10.0
