"""The text a captions request sends with its video: limits, sources, the ASR switch."""

from __future__ import annotations

import pytest

from pipelines.core.errors import ErrorCode, StageError
from pipelines.media.subtitles import MAX_SUBTITLE_BYTES
from serve.config import ServeConfig
from serve.context import RequestText, checked_text
from serve.errors import RequestError
from serve.speech import Transcript

ASR = {"asr": {"model": {"model": "openai/whisper-tiny"}}}


def test_defaults_come_from_the_endpoint_and_json_text_is_bytes():
    text = checked_text("1\n00:00:00,000 --> 00:00:01,000\nHi\n", "A title", None, ServeConfig())
    assert text == RequestText("auto", b"1\n00:00:00,000 --> 00:00:01,000\nHi\n", "A title")
    assert checked_text(None, None, None, ServeConfig(context={"source": "none"})).source == "none"


def _refused(*args) -> RequestError:
    with pytest.raises(RequestError) as info:
        checked_text(*args)
    return info.value


def test_transcript_needs_an_asr_endpoint():
    err = _refused(None, None, "transcript", ServeConfig())
    assert err.status == 400 and err.param == "context_source"
    assert checked_text(None, None, "transcript", ServeConfig(**ASR)).source == "transcript"
    with pytest.raises(ValueError, match="needs asr"):
        ServeConfig(context={"source": "transcript"})


def test_limits_name_themselves():
    err = _refused(b"x" * (MAX_SUBTITLE_BYTES + 1), None, None, ServeConfig())
    assert err.status == 413 and err.param == "subtitles"
    err = _refused(None, "x" * 101, None, ServeConfig(limits={"max_text_chars": 100}))
    assert err.status == 413 and err.param == "limits.max_text_chars"
    assert _refused(None, None, "ocr", ServeConfig()).param == "context_source"


def test_speech_recognition_runs_only_where_it_can_matter():
    asr = ServeConfig(**ASR)
    assert RequestText("auto").wants_asr(asr) and RequestText("transcript").wants_asr(asr)
    assert not RequestText("subtitles").wants_asr(asr)
    assert not RequestText("none").wants_asr(asr)
    assert not RequestText("auto").wants_asr(ServeConfig())
    assert not RequestText("auto").wants_asr(ServeConfig(**ASR, context={"max_tokens": 0}))


def test_asr_shares_the_gpu_when_it_is_on():
    assert set(ServeConfig().model_gpus(1)) == {"encoder", "lm"}
    shares = ServeConfig(**ASR).model_gpus(1)
    assert set(shares) == {"encoder", "lm", "asr"} and sum(shares.values()) <= 1.0


def test_a_transcript_answers_in_the_offline_row_shape():
    err = StageError(ErrorCode.NO_AUDIO_STREAM, "no audio stream", "audio")
    body = Transcript("error", "w", error=err).to_json()
    assert body["status"] == "error" and body["segments"] == [] and body["text"] == ""
    assert body["error_code"] == "no_audio_stream"
