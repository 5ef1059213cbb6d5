"""Sidecar and embedded subtitles become exact cues; bad subtitle input gives no cues, never raises."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from pipelines.media import subtitles, synth
from pipelines.media.subtitles import Cue

SRT = """1
00:00:00,500 --> 00:00:01,500
Hello <i>there</i>

2
00:00:02,000 --> 00:00:03,250
{\\an8}Second line
two rows

3
00:00:03,250 --> 00:00:02,000
end before start: skipped

garbage block without timing
"""

VTT = """WEBVTT - a title

NOTE this is a comment
spanning two lines

STYLE
::cue { color: yellow }

intro
00:00.500 --> 00:01.500 align:start position:10%
<v Roger>Hi <c.yellow>you</c>

01:00:02.000 --> 01:00:03.000
An hour in
"""


def test_srt_parses_to_exact_cues():
    assert subtitles.parse_subtitles(SRT) == [
        Cue(0.5, 1.5, "Hello there"),
        Cue(2.0, 3.25, "Second line\ntwo rows"),
    ]


def test_vtt_parses_to_exact_cues_and_skips_header_note_style():
    assert subtitles.parse_subtitles(VTT) == [
        Cue(0.5, 1.5, "Hi you"),  # short MM:SS.mmm form, cue settings and voice tags dropped
        Cue(3602.0, 3603.0, "An hour in"),
    ]


def test_cues_in_gives_overlapping_text_in_order_without_repeats():
    cues = [Cue(0.0, 2.0, "a"), Cue(1.5, 4.0, "b"), Cue(4.0, 5.0, "b"), Cue(6.0, 7.0, "c")]
    assert subtitles.cues_in(cues, 0.0, 1.0) == "a"
    assert subtitles.cues_in(cues, 1.8, 4.5) == "a\nb"  # the repeated "b" appears once
    assert subtitles.cues_in(cues, 4.0, 6.0) == "b"  # [6, 7) starts at the window end
    assert subtitles.cues_in(cues, 7.0, 9.0) == ""


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ("Caf\u00e9".encode("utf-8-sig"), "Caf\u00e9"),
        ("Caf\u00e9".encode("utf-16"), "Caf\u00e9"),
        ("Caf\u00e9".encode("cp1252"), "Caf\u00e9"),  # not UTF-8: cp1252 fallback
        (b"\x81\xff", "\ufffd\u00ff"),  # 0x81 is undefined in cp1252: replaced, no error
    ],
)
def test_decode_text_handles_encodings(data, expected):
    assert subtitles.decode_text(data) == expected


def test_sidecar_srt_next_to_video(tmp_path, cfr_25s):
    video = tmp_path / "clip.mp4"
    shutil.copy(cfr_25s, video)
    (tmp_path / "clip.srt").write_bytes(SRT.replace("\n", "\r\n").encode("cp1252"))
    assert subtitles.load_cues(str(video)) == subtitles.parse_subtitles(SRT)


def test_sidecar_vtt_when_no_srt(tmp_path):
    video = tmp_path / "clip.mkv"
    video.write_bytes(b"")  # the sidecar lookup does not open the video
    (tmp_path / "clip.vtt").write_text(VTT, encoding="utf-16")
    assert subtitles.read_sidecar(str(video))[0] == Cue(0.5, 1.5, "Hi you")


@pytest.mark.parametrize(
    "content",
    [b"", b"\x00" * 5000, bytes(range(256)) * 40, b"1\n99:99:99,999 --> nonsense\nx\n"],
)
def test_bad_sidecar_gives_no_cues(tmp_path, content):
    video = tmp_path / "v.mp4"
    (tmp_path / "v.srt").write_bytes(content)
    assert subtitles.read_sidecar(str(video)) == []
    assert subtitles.load_cues(str(video)) == []  # the video is missing too: still no raise


def test_no_sidecar_and_no_embedded_stream(cfr_25s):
    assert subtitles.load_cues(cfr_25s) == []


@pytest.mark.parametrize("codec", ["subrip", "webvtt", "ass"])
def test_embedded_text_stream_in_mkv(tmp_path, codec):
    path = tmp_path / f"{codec}.mkv"
    # An ASS override tag is SRT/ASS markup; in WebVTT it would be literal text.
    text = SRT.replace("{\\an8}", "") if codec == "webvtt" else SRT
    synth.write_with_subtitles(path, text, codec=codec)
    assert subtitles.read_embedded(str(path)) == [
        Cue(0.5, 1.5, "Hello there"),
        Cue(2.0, 3.25, "Second line\ntwo rows"),
    ]
    assert subtitles.load_cues(str(path)) == subtitles.read_embedded(str(path))


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg CLI needed to write mov_text")
def test_embedded_mov_text_in_mp4(tmp_path, cfr_25s):
    # PyAV cannot encode mov_text (its encoder needs an ASS header PyAV does not expose).
    srt = tmp_path / "in.srt"
    srt.write_text(SRT.split("\n3\n")[0], encoding="utf-8")  # FFmpeg refuses cue 3's times
    out = tmp_path / "movtext.mp4"
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            cfr_25s,
            "-i",
            str(srt),
            "-map",
            "0:v",
            "-map",
            "1:s",
            "-c:v",
            "copy",
            "-c:s",
            "mov_text",
            str(out),
        ],
        check=True,
    )
    assert subtitles.read_embedded(str(out)) == [
        Cue(0.5, 1.5, "Hello there"),
        Cue(2.0, 3.25, "Second line\ntwo rows"),
    ]


def test_embedded_read_of_bad_or_forbidden_file_gives_no_cues(bad_media):
    for name in ("random.mp4", "zero.mp4", "concat.avi", "hls.avi"):
        assert subtitles.read_embedded(bad_media[name]) == [], name
    assert subtitles.read_embedded(str(Path(bad_media["zero.mp4"]).parent / "absent.mp4")) == []
