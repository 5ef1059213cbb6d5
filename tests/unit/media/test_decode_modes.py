"""Sparse decoding, keyframes mode, chunking modes and edge-case files, with exact picks."""

from __future__ import annotations

import av
import pytest

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError
from pipelines.media import decode, frames, sampling, synth
from tests.unit.media.qwen_defaults import qwen_decode

GOP_2S = {"x264-params": "keyint=20:min-keyint=20:scenecut=0"}  # at 10 fps
GOP_1S = {"x264-params": "keyint=10:min-keyint=10:scenecut=0"}


def indices(clip: decode.DecodedClip) -> list[int]:
    return [synth.read_index(frame) for frame in clip.frames]


@pytest.fixture(scope="session")
def gop2_60s(media_dir) -> str:
    """60 s at 10 fps, a keyframe every 2 s, B-frames on (x264 defaults)."""
    path = media_dir / "gop2_60s.mp4"
    synth.write_video(path, seconds=60, fps=10, codec_options=GOP_2S)
    return str(path)


@pytest.fixture(scope="session")
def gop1_6s(media_dir) -> str:
    path = media_dir / "gop1_6s.mp4"
    synth.write_video(path, seconds=6, fps=10, codec_options=GOP_1S)
    return str(path)


@pytest.fixture
def opened_log(monkeypatch) -> list[frames.Opened]:
    """Every ``Opened`` the decoder creates, to read its seek and decoded-frame counters."""
    log = []
    inspect = frames.inspect

    def spy(*args, **kwargs):
        log.append(inspect(*args, **kwargs))
        return log[-1]

    monkeypatch.setattr(frames, "inspect", spy)
    return log


def run(path: str, cfg: DecodeConfig, log: list) -> tuple[list[decode.DecodedClip], object]:
    clips = list(decode.iter_clips(path, cfg))
    return clips, log[-1]


# ---------------------------------------------------------------- sparse decoding


def test_far_targets_are_reached_by_seeking_with_identical_picks(gop2_60s, opened_log):
    sparse = qwen_decode(clip_s=20.0, fps=0.1, min_frames=2)  # targets 5 s, 15 s, 25 s, ...
    full = sparse.model_copy(update={"seek_min_gap_s": 86400.0, "nonref_margin_s": 0.0})
    clips, opened = run(gop2_60s, sparse, opened_log)
    full_clips, full_opened = run(gop2_60s, full, opened_log)

    assert [indices(c) for c in clips] == [[50, 150], [250, 350], [450, 550]]
    assert [indices(c) for c in clips] == [indices(c) for c in full_clips]
    assert [c.frame_offset_s for c in clips] == [(0.0, 0.0)] * 3
    assert full_opened.seeks == 0 and full_opened.decoded_frames == 600
    # Six seeks (to 5, 15, ... 55 s, each more than 4 s = two GOPs ahead); each lands on the
    # keyframe at or before its target (4, 14, ... s), so about one GOP is decoded per target.
    assert opened.seeks == 6
    assert opened.decoded_frames < 0.15 * 600


def test_nonref_skipping_keeps_every_pick_of_a_full_decode(cfr_25s, opened_log):
    cfg = qwen_decode(clip_s=10.0, fps=2.0)
    full = cfg.model_copy(update={"nonref_margin_s": 0.0})
    clips, opened = run(cfr_25s, cfg, opened_log)
    full_clips, full_opened = run(cfr_25s, full, opened_log)
    assert [indices(c) for c in clips] == [indices(c) for c in full_clips]
    assert [c.frame_ts_s for c in clips] == [c.frame_ts_s for c in full_clips]
    assert full_opened.decoded_frames == 250
    assert opened.decoded_frames < full_opened.decoded_frames  # x264's non-reference B-frames


def test_offsets_are_pick_minus_target(cfr_25s):
    clip = next(decode.iter_clips(cfr_25s, qwen_decode()))
    # Targets at 0.25 + 0.5 j sit halfway between frames; the earlier one wins: -0.05 s.
    assert clip.frame_offset_s == pytest.approx([-0.05] * 20)


# ------------------------------------------------------------------ keyframes mode


def test_keyframes_mode_picks_nearest_keyframe_and_reports_the_error(gop1_6s, opened_log):
    cfg = qwen_decode(clip_s=3.0, fps=2.0, decode_mode="keyframes")
    clips, opened = run(gop1_6s, cfg, opened_log)
    # Keyframes at 0, 1, ..., 5 s. Targets 0.25, 0.75, ...: ties never occur, nearest wins.
    assert [indices(c) for c in clips] == [[0, 10, 10, 20, 20, 30], [30, 40, 40, 50, 50, 50]]
    assert clips[0].frame_offset_s == pytest.approx([-0.25, 0.25, -0.25, 0.25, -0.25, 0.25])
    assert clips[1].frame_offset_s == pytest.approx([-0.25, 0.25, -0.25, 0.25, -0.25, -0.75])
    assert opened.decoded_frames == 6


# ----------------------------------------------------------------- chunking modes


def test_fixed_windows_with_overlap(cfr_25s):
    clips = list(decode.iter_clips(cfr_25s, qwen_decode(clip_s=10.0, overlap_s=4.0)))
    assert [(c.start_s, c.end_s, len(c.frame_ts_s)) for c in clips] == [
        (0.0, 10.0, 20),
        (6.0, 16.0, 20),
        (12.0, 22.0, 20),
        (18.0, 25.0, 14),
    ]
    for clip in clips:
        plan = sampling.plan_clip(0, clip.start_s, clip.end_s, qwen_decode())
        frame_ts = [i / 10 for i in range(250)]
        assert indices(clip) == sampling.nearest_indices(frame_ts, plan.target_ts_s)


def test_none_is_one_clip_capped_at_max_frames(cfr_25s):
    (clip,) = decode.iter_clips(cfr_25s, qwen_decode(chunking="none"))
    assert (clip.start_s, clip.end_s, len(clip.frame_ts_s)) == (0.0, 25.0, 50)
    (capped,) = decode.iter_clips(cfr_25s, qwen_decode(chunking="none", max_frames=16))
    assert len(capped.frame_ts_s) == 16
    assert indices(capped) == sampling.nearest_indices(
        [i / 10 for i in range(250)], sampling.target_times(0.0, 25.0, 16)
    )


def test_none_with_undeclared_duration_uses_the_packets(media_dir):
    path = media_dir / "raw_none.h264"
    synth.write_video(path, seconds=5, fps=25, container_format="h264")
    (clip,) = decode.iter_clips(str(path), qwen_decode(chunking="none"))
    assert (clip.start_s, round(clip.end_s, 6), len(clip.frame_ts_s)) == (0.0, 5.0, 10)
    assert not clip.partial


def test_scenes_cut_merge_and_split(media_dir):
    path = media_dir / "scenes.mp4"
    cuts = synth.write_scenes_video(path, [3.0, 0.8, 5.0, 25.0], fps=10)
    assert cuts == pytest.approx([3.0, 3.8, 8.8])
    cfg = qwen_decode(chunking="scenes", min_clip_s=2.0, max_clip_s=12.0)
    clips = list(decode.iter_clips(str(path), cfg))
    # The 0.8 s scene is merged into the next one; the 25 s one is split into 3 x 8.33 s.
    bounds = [b for c in clips for b in (c.start_s, c.end_s)]
    split = 25.0 / 3
    assert bounds == pytest.approx(
        [0.0, 3.0, 3.0, 8.8, 8.8, 8.8 + split, 8.8 + split, 8.8 + 2 * split, 8.8 + 2 * split, 33.8]
    )
    assert [len(c.frame_ts_s) for c in clips] == [6, 10, 16, 16, 16]
    assert all(c.start_s <= t < c.end_s for c in clips for t in c.frame_ts_s)


def test_config_refuses_inconsistent_chunking():
    with pytest.raises(ValueError, match="overlap_s"):
        qwen_decode(clip_s=5.0, overlap_s=5.0)
    with pytest.raises(ValueError, match="min_clip_s"):
        qwen_decode(min_clip_s=10.0, max_clip_s=5.0)


# --------------------------------------------------------------- edge-case files


def test_huge_declared_size_is_refused_before_decoding(media_dir):
    path = media_dir / "huge.y4m"
    synth.write_huge_declared_size(path)  # 16000 x 16000 declared, no frame data
    for call in (
        lambda: list(decode.iter_clips(str(path), qwen_decode())),
        lambda: decode.probe(str(path), qwen_decode()),
    ):
        with pytest.raises(MediaError) as info:
            call()
        assert info.value.code == ErrorCode.TOO_LARGE
        assert "16000x16000" in info.value.message


def test_one_frame_video(media_dir):
    path = media_dir / "one_frame.mp4"
    synth.write_video(path, seconds=0.1, fps=10)
    (clip,) = decode.iter_clips(str(path), qwen_decode())
    assert (clip.start_s, clip.end_s, clip.partial) == (0.0, pytest.approx(0.1), False)
    assert indices(clip) == [0, 0, 0, 0]
    assert clip.frame_ts_s == (0.0, 0.0, 0.0, 0.0)


@pytest.mark.parametrize(("default_index", "shape"), [(None, (48, 64)), (1, (24, 32))])
def test_two_video_streams_pick_the_default_else_the_first(media_dir, default_index, shape):
    path = media_dir / f"two_streams_{default_index}.mkv"
    synth.write_two_video_streams(path, default_index=default_index)
    (clip,) = decode.iter_clips(str(path), qwen_decode())
    assert clip.frames.shape[1:3] == shape
    assert indices(clip) == [1, 4, 6, 9]


def test_zero_byte_packets_do_not_end_the_stream(media_dir):
    path = media_dir / "zero_packets.nut"
    count = synth.write_zero_byte_packets(path)
    with av.open(str(path)) as container:  # control: the plain decode loop fails on them
        with pytest.raises(av.error.FFmpegError):
            sum(1 for _ in container.decode(video=0))
    (clip,) = decode.iter_clips(str(path), qwen_decode(fps=None, num_frames=10, min_frames=2))
    assert indices(clip) == list(range(count))


def test_sparse_variable_rate_frames_never_lose_a_pick_to_skipping(vfr_mkv):
    # Frame 2.0 s is a non-reference frame 0.22 s from its target, farther than the margin:
    # it gets skipped at first, the pick check notices, and the video is decoded again.
    path, _ = vfr_mkv
    skipping = list(decode.iter_clips(path, qwen_decode()))
    full = list(decode.iter_clips(path, qwen_decode(nonref_margin_s=0.0)))
    assert [c.frame_ts_s for c in skipping] == [c.frame_ts_s for c in full]
    assert [indices(c) for c in skipping] == [indices(c) for c in full] == [[2, 3, 4, 5, 5, 6]]


def test_keyframes_mode_with_one_keyframe_still_covers_every_window(media_dir):
    path = media_dir / "one_keyframe.mp4"
    synth.write_video(
        path, seconds=25, fps=10, codec_options={"x264-params": "keyint=1000:scenecut=0"}
    )
    cfg = qwen_decode(decode_mode="keyframes")
    clips = list(decode.iter_clips(str(path), cfg))
    exact = list(decode.iter_clips(str(path), qwen_decode()))
    assert [(c.start_s, c.end_s, len(c.frame_ts_s), c.partial) for c in clips] == [
        (c.start_s, c.end_s, len(c.frame_ts_s), c.partial) for c in exact
    ]
    assert all(indices(c) == [0] * len(c.frame_ts_s) for c in clips)
    plans = sampling.plan_clips(25.0, cfg, 0.1)
    for clip, plan in zip(clips, plans, strict=True):
        assert clip.frame_offset_s == pytest.approx([-t for t in plan.target_ts_s])
