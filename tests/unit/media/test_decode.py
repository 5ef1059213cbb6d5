"""Decode, chunk and sample synthetic videos; every bad input gives its exact error code."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import av
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError
from pipelines.media import decode, sampling, synth
from pipelines.media import open as media_open
from tests.unit.media.qwen_defaults import qwen_decode

CFG = qwen_decode(clip_s=10.0, fps=2.0)


def indices(clip: decode.DecodedClip) -> list[int]:
    return [synth.read_index(frame) for frame in clip.frames]


def error_code(path: str, cfg: DecodeConfig = CFG, **kwargs) -> ErrorCode:
    with pytest.raises(MediaError) as info:
        list(decode.iter_clips(path, cfg, **kwargs))
    return info.value.code


# ---------------------------------------------------------------- chunking and sampling


def test_25s_video_gives_three_clips_with_exact_bounds_counts_and_picks(cfr_25s):
    clips = list(decode.iter_clips(cfr_25s, CFG))

    assert [(c.clip_index, c.start_s, c.end_s, len(c.frame_ts_s)) for c in clips] == [
        (0, 0.0, 10.0, 20),
        (1, 10.0, 20.0, 20),
        (2, 20.0, 25.0, 10),
    ]
    for clip in clips:
        # Targets sit at start + 0.25 + 0.5 j, halfway between two frames: ties go to the
        # earlier one, so clip k picks frames 100 k + 5 j + 2.
        expected = [100 * clip.clip_index + 5 * j + 2 for j in range(len(clip.frame_ts_s))]
        assert indices(clip) == expected
        assert clip.frame_ts_s == pytest.approx([i / 10 for i in expected], abs=1e-9)
        assert not clip.partial


def test_picks_match_the_reference_nearest_rule(cfr_25s):
    cfg = qwen_decode(clip_s=7.0, fps=None, num_frames=6, min_frames=2)
    frame_ts = [i / 10 for i in range(250)]
    plans = sampling.plan_clips(25.0, cfg, 0.1)
    clips = list(decode.iter_clips(cfr_25s, cfg))
    assert len(clips) == len(plans) == 4
    for clip, plan in zip(clips, plans, strict=True):
        assert indices(clip) == sampling.nearest_indices(frame_ts, plan.target_ts_s)


def test_frames_are_uint8_rgb_nhwc(cfr_25s):
    clip = next(decode.iter_clips(cfr_25s, CFG))
    assert clip.frames.dtype == np.uint8
    assert clip.frames.shape == (20, 48, 64, 3)
    assert clip.frames.flags.c_contiguous


def test_vfr_picks_follow_pts_not_frame_index(vfr_mkv):
    vfr_mkv, vfr_pts = vfr_mkv
    info = decode.probe(vfr_mkv, CFG)
    assert info.duration_s == pytest.approx(3.8)  # MKV declares last PTS + one frame
    (clip,) = decode.iter_clips(vfr_mkv, CFG)
    # 3.8 s x 2 fps = 7.6 -> floored to 6 targets at (j + 0.5) x 3.8 / 6 against VFR_PTS;
    # 2.85 s is a tie between 2.0 and 3.7 and goes to the earlier frame.
    assert clip.frame_ts_s == pytest.approx((0.5, 1.3, 1.31, 2.0, 2.0, 3.7))
    assert indices(clip) == [2, 3, 4, 5, 5, 6]
    assert set(clip.frame_ts_s) <= set(vfr_pts)


def test_time_origin_is_the_first_frame(media_dir):
    # MPEG-TS starts its clock at 1.4 s; times must still start from 0.
    path = media_dir / "offset.ts"
    synth.write_video(path, seconds=3, fps=10, container_format="mpegts")
    clip = next(decode.iter_clips(str(path), qwen_decode(clip_s=10.0, fps=2.0)))
    assert indices(clip) == [2, 7, 12, 17, 22, 27]
    assert clip.frame_ts_s == pytest.approx([0.2, 0.7, 1.2, 1.7, 2.2, 2.7])


def test_unknown_duration_cuts_the_last_window_at_the_last_frame(media_dir):
    path = media_dir / "raw.h264"  # an elementary stream declares no duration (and 25 fps)
    synth.write_video(path, seconds=5, fps=25, container_format="h264")
    clips = list(decode.iter_clips(str(path), qwen_decode(clip_s=2.0, fps=2.0)))
    assert decode.probe(str(path), CFG).duration_s is None
    assert [(c.start_s, round(c.end_s, 6), len(c.frame_ts_s), c.partial) for c in clips] == [
        (0.0, 2.0, 4, False),
        (2.0, 4.0, 4, False),
        (4.0, 5.0, 4, False),  # cut at last frame (4.96 s) + one frame; 2 targets, padded
    ]
    assert indices(clips[2]) == [106, 119, 119, 119]  # 4.24 s, 4.76 s, then repeats


def test_short_video_repeats_frames_to_reach_min_frames(media_dir):
    path = media_dir / "three_frames.mp4"
    synth.write_video(path, seconds=0.3, fps=10)
    (clip,) = decode.iter_clips(str(path), CFG)
    assert (clip.start_s, clip.end_s) == (0.0, pytest.approx(0.3))
    assert indices(clip) == [0, 1, 2, 2]  # targets 0.0375, 0.1125, 0.1875, 0.2625


def test_frames_are_scaled_so_the_longer_side_fits(big_frame_mp4):
    clip = next(decode.iter_clips(big_frame_mp4, qwen_decode(max_side_px=64)))
    assert clip.frames.shape[1:] == (32, 64, 3)
    assert indices(clip) == [0, 1, 2, 3]


def test_rotation_makes_frames_upright(rotated_mp4):
    assert decode.probe(rotated_mp4, CFG).rotation_deg == -90
    cfg = qwen_decode(fps=None, num_frames=2, min_frames=2)
    clip = next(decode.iter_clips(rotated_mp4, cfg))
    assert clip.frames.shape == (2, 64, 32, 3)  # portrait
    # Stored frame 2 was turned clockwise; turning it back counter-clockwise restores it.
    assert synth.read_index(np.rot90(clip.frames[0], 1)) == 2
    assert synth.read_index(np.rot90(clip.frames[0], -1)) != 2


def test_ten_bit_video_becomes_8_bit_rgb(media_dir):
    path = media_dir / "ten_bit.mkv"
    synth.write_video(path, seconds=1, fps=10, codec="ffv1", pix_fmt="yuv420p10le")
    assert decode.probe(str(path), CFG).codec == "ffv1"
    clip = next(decode.iter_clips(str(path), CFG))
    assert clip.frames.dtype == np.uint8
    assert indices(clip) == [1, 4, 6, 9]  # targets 0.125, 0.375, 0.625, 0.875


def test_iter_clips_streams_instead_of_decoding_everything_first(media_dir):
    path = media_dir / "moving_60s.mp4"
    synth.write_video(path, seconds=60, fps=10, width=160, height=120, pattern="moving")
    clips = decode.iter_clips(str(path), CFG)
    assert inspect.isgenerator(clips)
    tracker = _TrackingFS()
    first = next(decode.iter_clips(str(path), CFG, filesystem=pafs.PyFileSystem(tracker)))
    assert first.clip_index == 0
    # The first of six clips is out before half the file was read (FFmpeg reads the MP4 index
    # at the end and probes ahead, so it is more than a sixth).
    assert tracker.bytes_read < 0.5 * os.path.getsize(path)


def test_uri_and_explicit_filesystem(cfr_25s):
    via_uri = next(decode.iter_clips(Path(cfr_25s).as_uri(), CFG))
    sub = pafs.SubTreeFileSystem(str(Path(cfr_25s).parent), pafs.LocalFileSystem())
    via_fs = next(decode.iter_clips(Path(cfr_25s).name, CFG, filesystem=sub))
    assert indices(via_uri) == indices(via_fs) == [5 * j + 2 for j in range(20)]


# ------------------------------------------------------------------- file-level errors


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("zero.mp4", ErrorCode.EMPTY),
        ("random.mp4", ErrorCode.CORRUPT),
        ("audio_only.mp4", ErrorCode.NO_VIDEO_STREAM),
        ("png.mp4", ErrorCode.NO_VIDEO_STREAM),  # a valid still image is not a video
        ("unsupported.avi", ErrorCode.UNSUPPORTED_CODEC),
        ("truncated_moov_at_end.mp4", ErrorCode.CORRUPT),  # the index was in the lost half
        ("concat.avi", ErrorCode.FORBIDDEN),
        ("hls.avi", ErrorCode.FORBIDDEN),
    ],
)
def test_bad_file_gives_its_error_code(bad_media, name, code):
    assert error_code(bad_media[name]) == code
    with pytest.raises(MediaError) as info:
        decode.probe(bad_media[name], CFG)
    assert info.value.code == code


def test_missing_file_and_directory(tmp_path):
    assert error_code(str(tmp_path / "nope.mp4")) == ErrorCode.NOT_FOUND
    assert error_code(str(tmp_path)) == ErrorCode.UNREADABLE


def test_open_failure_is_unreadable(cfr_25s):
    fs = pafs.PyFileSystem(_TrackingFS(refuse_open=True))
    assert error_code(cfr_25s, filesystem=fs) == ErrorCode.UNREADABLE


def test_limits(cfr_25s):
    assert error_code(cfr_25s, qwen_decode(max_file_bytes=100)) == ErrorCode.TOO_LARGE
    assert error_code(cfr_25s, qwen_decode(max_frame_pixels=64 * 48 - 1)) == ErrorCode.TOO_LARGE
    assert error_code(cfr_25s, qwen_decode(max_duration_s=24.0)) == ErrorCode.TOO_LONG
    assert error_code(cfr_25s, qwen_decode(timeout_s=1e-6)) == ErrorCode.DECODE_TIMEOUT


def test_truncated_file_yields_what_it_can_and_marks_the_last_clip_partial(truncated_mkv):
    clips = list(decode.iter_clips(truncated_mkv, qwen_decode(clip_s=2.0, fps=2.0)))
    assert len(clips) >= 2
    assert [c.partial for c in clips] == [False] * (len(clips) - 1) + [True]
    last = clips[-1]
    assert last.end_s < 10.0
    assert len(last.frame_ts_s) % 2 == 0 and len(last.frame_ts_s) >= 4
    assert max(indices(last)) / 10 <= last.end_s
    assert indices(clips[0]) == [2, 7, 12, 17]


def test_disguised_playlist_never_opens_the_file_it_names(bad_media, monkeypatch):
    playlist, secret = bad_media["concat.avi"], bad_media["secret.mp4"]
    # Control: plain FFmpeg does follow the playlist into the secret file.
    with av.open(playlist) as container:
        assert container.format.name == "concat"
        assert sum(1 for _ in container.decode(video=0)) == 10
    os.utime(secret, (0, os.stat(secret).st_mtime))
    atime_works = os.stat(secret).st_atime == 0
    # With the first-bytes check off, the FFmpeg-level barriers must still hold.
    monkeypatch.setattr(media_open, "is_reference_format", lambda head: False)
    assert error_code(playlist) in (ErrorCode.FORBIDDEN, ErrorCode.CORRUPT)
    assert error_code(bad_media["hls.avi"]) in (ErrorCode.FORBIDDEN, ErrorCode.CORRUPT)
    if atime_works:
        assert os.stat(secret).st_atime == 0, "the referenced file was read"


# -------------------------------------------------------------------------- helpers


class _TrackingFS(pafs.FileSystemHandler):
    """Local files through pyarrow's extension point, counting the bytes FFmpeg reads."""

    def __init__(self, refuse_open: bool = False) -> None:
        self.local = pafs.LocalFileSystem()
        self.refuse_open = refuse_open
        self.bytes_read = 0

    def open_input_file(self, path):
        if self.refuse_open:
            raise PermissionError(f"{path}: permission denied")
        handler = self

        class Counting:
            def __init__(self, raw):
                self.raw = raw
                self.closed = False

            def read(self, n=-1):
                data = self.raw.read(n)
                handler.bytes_read += len(data)
                return data

            def __getattr__(self, name):
                return getattr(self.raw, name)

        return pa.PythonFile(Counting(open(path, "rb")), mode="r")

    def get_file_info(self, paths):
        return self.local.get_file_info(paths)

    def get_type_name(self):
        return "tracking"

    def __eq__(self, other):
        return self is other

    def __ne__(self, other):
        return self is not other

    def normalize_path(self, path):
        return path

    def get_file_info_selector(self, selector):
        raise NotImplementedError

    def create_dir(self, path, recursive):
        raise NotImplementedError

    def delete_dir(self, path):
        raise NotImplementedError

    def delete_dir_contents(self, path, missing_dir_ok=False):
        raise NotImplementedError

    def delete_root_dir_contents(self):
        raise NotImplementedError

    def delete_file(self, path):
        raise NotImplementedError

    def move(self, src, dest):
        raise NotImplementedError

    def copy_file(self, src, dest):
        raise NotImplementedError

    def open_input_stream(self, path):
        return self.open_input_file(path)

    def open_output_stream(self, path, metadata):
        raise NotImplementedError

    def open_append_stream(self, path, metadata):
        raise NotImplementedError
