"""/v1/captions with the video's text over real HTTP: an uploaded subtitle file, free text,
and speech recognition on an endpoint configured with a (tiny, random-weight) Whisper."""

from __future__ import annotations

import base64

import pytest
import requests

from pipelines.core.output import COLUMNS
from pipelines.media import synth, synth_audio
from pipelines.media.subtitles import Cue, cues_in, parse_subtitles
from pipelines.models.whisper import build_tiny_whisper

SMALL = {"num_cpus": 0.25}
SRT = """1
00:00:00,300 --> 00:00:01,500
Welcome to the kitchen.

2
00:00:02,400 --> 00:00:03,600
Now we stir.
"""
NAMES = {name for name, _, _ in COLUMNS}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-context-media")
    synth.write_video(root / "silent.mp4", seconds=4.0, fps=5.0, width=64, height=48)
    synth_audio.write_video_with_audio(
        root / "speech.mp4", tones=((2.0, 300.0), (2.0, 900.0)), width=64, height=48
    )
    return root


@pytest.fixture(scope="module")
def endpoint(serve_url, tiny_model_dir, tmp_path_factory):
    """An app of its own (name and route) with speech recognition on; gone afterwards."""
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    whisper = build_tiny_whisper(tmp_path_factory.mktemp("whisper") / "tiny-whisper")
    config = ServeConfig(
        model={"model": tiny_model_dir("qwen2_vl")},
        prompt="Describe.",
        decode={"clip_s": 2.0, "fps": 2.0, "min_frames": 4, "max_frames": 4, "max_side_px": 64},
        generation={"max_new_tokens": 3},
        asr={"model": {"model": str(whisper)}, "max_new_tokens": 12},
        ingress=SMALL,
        decoder=SMALL,
        encoder=SMALL,
        lm=SMALL,
        transcriber=SMALL,
    )
    serve.run(build_app(config), name="vidcap-context", route_prefix="/ctx")
    yield f"{serve_url}/ctx/v1/captions"
    serve.delete("vidcap-context")


def _post(url, media, video="silent.mp4", subtitles=None, **fields) -> requests.Response:
    files = {"file": (video, (media / video).read_bytes(), "video/mp4")}
    if subtitles is not None:
        files["subtitles"] = ("clip.srt", subtitles, "application/x-subrip")
    return requests.post(url, files=files, data=fields, timeout=120)


def _own_cues(rows: list[dict], cues) -> None:
    """Each row's context is exactly the cues overlapping its clip (and not its neighbours')."""
    for row in rows:
        assert row["error_code"] == "", row["error_message"]
        assert row["context"] == cues_in(cues, row["start_s"], row["end_s"])


def test_uploaded_subtitles_give_each_clip_its_own_cues(endpoint, media):
    r = _post(endpoint, media, subtitles=SRT.encode())
    assert r.status_code == 200, r.text
    body = r.json()
    rows = body["clips"]
    assert len(rows) == 2 and set(rows[0]) == NAMES
    _own_cues(rows, parse_subtitles(SRT))
    assert [row["context"] for row in rows] == ["Welcome to the kitchen.", "Now we stir."]
    assert {row["context_source"] for row in rows} == {"subtitles"}
    assert all(row["context_tokens"] > 0 and row["context_cut_tokens"] == 0 for row in rows)
    # auto on an ASR endpoint: the video has subtitles, so nothing was transcribed.
    assert body["transcript"]["status"] == "subtitles" and body["transcript"]["windows"] == 0


def test_json_subtitles_and_free_text_context(endpoint, media):
    url = "data:video/mp4;base64," + base64.b64encode((media / "silent.mp4").read_bytes()).decode()
    payload = {
        "url": url,
        "subtitles": SRT,
        "context": "A cooking show",
        "context_source": "subtitles",
    }
    r = requests.post(endpoint, json=payload, timeout=120)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [row["context"] for row in body["clips"]] == [
        "A cooking show\nWelcome to the kitchen.",
        "A cooking show\nNow we stir.",
    ]
    assert {row["context_source"] for row in body["clips"]} == {"subtitles,manifest"}
    assert body["transcript"] is None  # source subtitles: no speech recognition asked for


def test_garbled_subtitles_give_rows_without_context(endpoint, media):
    garbled = bytes(range(256)) * 8 + b"\n00:00:01 --> nonsense\n\xff\xfe"
    r = _post(endpoint, media, subtitles=garbled, context_source="subtitles")
    assert r.status_code == 200, r.text
    rows = r.json()["clips"]
    assert len(rows) == 2
    assert all(row["context"] == "" and row["context_source"] == "" for row in rows)
    assert all(row["error_code"] == "" for row in rows)


@pytest.mark.parametrize(
    "data, files, param",
    [
        ({"subtitles": SRT}, {}, "subtitles"),  # a text field where a file part belongs
        ({}, {"context": ("c.txt", b"title")}, "context"),
        ({"context_source": "ocr"}, {}, "context_source"),
    ],
)
def test_wrong_typed_parts_are_400(endpoint, media, data, files, param):
    upload = {"file": ("silent.mp4", (media / "silent.mp4").read_bytes()), **files}
    r = requests.post(endpoint, files=upload, data=data, timeout=60)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_request" and error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_video_with_audio_is_transcribed_and_clips_get_their_segments(endpoint, media):
    r = _post(endpoint, media, video="speech.mp4")
    assert r.status_code == 200, r.text
    body = r.json()
    transcript = body["transcript"]
    # Deterministic whatever the random weights say: the transcription ran, on one window.
    assert transcript["status"] == "transcribed", transcript
    assert transcript["windows"] == 1 and transcript["audio_s"] == pytest.approx(4.0, abs=0.1)
    assert transcript["model_id"].endswith("tiny-whisper")
    cues = [Cue(s["start_s"], s["end_s"], s["text"]) for s in transcript["segments"]]
    rows = body["clips"]
    assert len(rows) == 2 and set(rows[0]) == NAMES
    _own_cues(rows, cues)
    for row in rows:
        assert row["context_source"] == ("transcript" if row["context"] else "")


def test_transcript_source_on_a_video_without_audio_still_captions(endpoint, media):
    r = _post(endpoint, media, context_source="transcript")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["transcript"]["status"] == "error"
    assert body["transcript"]["error_code"] == "no_audio_stream"
    rows = body["clips"]
    assert len(rows) == 2
    assert all(row["error_code"] == "" and row["context_source"] == "" for row in rows)
