"""``media.open``: the one rule for what FFmpeg may open, and every consumer follows it."""

from __future__ import annotations

from io import BytesIO

import numpy as np
import pytest
from PIL import Image

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError
from pipelines.media import decode, subtitles, synth
from pipelines.media.open import is_reference_format, open_media, pick_stream
from pipelines.tools import report_figures

CFG = DecodeConfig()


@pytest.mark.parametrize(
    "head,reference",
    [
        (b"#EXTM3U\n#EXTINF:1,\nx.ts\n", True),
        (b"\xef\xbb\xbf \r\n#EXTM3U\n", True),  # BOM and blank lines do not hide it
        (b"ffconcat version 1.0\nfile 'a.mp4'\n", True),
        (b'<?xml version="1.0"?>\n<MPD xmlns="urn:mpeg:dash:schema:mpd:2011">', True),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", False),
        (b"v=1 is not SDP", False),
    ],
)
def test_reference_formats_are_known_by_their_first_bytes(head, reference):
    assert is_reference_format(head) is reference


def _code(path: str, cfg: DecodeConfig = CFG) -> ErrorCode:
    with pytest.raises(MediaError) as exc, open_media(path, cfg):
        pass
    return exc.value.code


def test_open_media_refuses_before_ffmpeg_reads_what_it_must_not(tmp_path, bad_media):
    (tmp_path / "dir.mp4").mkdir()
    assert _code(str(tmp_path / "missing.mp4")) == ErrorCode.NOT_FOUND
    assert _code(str(tmp_path / "dir.mp4")) == ErrorCode.UNREADABLE
    assert _code(bad_media["zero.mp4"]) == ErrorCode.EMPTY
    assert _code(bad_media["secret.mp4"], DecodeConfig(max_file_bytes=10)) == ErrorCode.TOO_LARGE
    assert _code(bad_media["random.mp4"]) == ErrorCode.CORRUPT
    assert _code(bad_media["concat.avi"]) == ErrorCode.FORBIDDEN
    assert _code(bad_media["hls.avi"]) == ErrorCode.FORBIDDEN
    with open_media(bad_media["secret.mp4"], CFG) as container:
        assert pick_stream(container).index == 0


def test_pick_stream_prefers_the_default_video_stream(tmp_path):
    path = tmp_path / "two.mkv"
    synth.write_two_video_streams(path, default_index=1)
    with open_media(str(path), CFG) as container:
        assert pick_stream(container).index == 1


@pytest.mark.parametrize("name", ["random.mp4", "concat.avi", "hls.avi", "zero.mp4"])
def test_decoder_thumbnails_and_subtitles_refuse_the_same_files(bad_media, name):
    with pytest.raises(MediaError) as exc:
        decode.probe(bad_media[name], CFG)
    thumbs = report_figures.grab_thumbnails(bad_media[name], [0.0])
    assert not thumbs.jpegs and thumbs.problem.startswith(exc.value.code.value)
    assert subtitles.read_embedded(bad_media[name]) == []


def test_thumbnails_are_the_decoders_frames_at_its_times(media_dir):
    # Irregular frame times behind a clock that does not start at 0 (MPEG-TS starts at 1.4 s):
    # the thumbnail at each of a clip's frame_ts_s is that clip's frame.
    path = media_dir / "vfr_offset.ts"
    synth.write_video(
        path, vfr_pts=(0.0, 0.05, 0.5, 1.3, 1.31, 2.0, 3.7), width=320, height=240,
        container_format="mpegts",
    )  # fmt: skip
    (clip,) = decode.iter_clips(str(path), DecodeConfig(clip_s=10.0, fps=2.0))
    thumbs = report_figures.grab_thumbnails(str(path), list(clip.frame_ts_s))
    assert not thumbs.problem
    got = [
        synth.read_index(np.asarray(Image.open(BytesIO(j)).convert("RGB"))) for j in thumbs.jpegs
    ]
    assert got == [synth.read_index(f) for f in clip.frames]
    assert len(set(got)) > 3
