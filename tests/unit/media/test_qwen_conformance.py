"""Golden tests: our frame-count rule against the ``qwen_vl_utils`` package itself.

qwen-vl-utils samples a whole video: ``smart_nframes(ele, total_frames, video_fps)`` counts
frames from ``total_frames / video_fps`` seconds. We sample each clip window, so the
equivalence tested here is per window: a window of ``L`` seconds gets what qwen-vl-utils gives a
video of ``L`` seconds. Where the rules differ on purpose (see ``sampling``), the test pins our
behaviour instead. ``smart_resize`` is not used by the decoder (it scales to ``max_side_px``
and leaves the patch-size resize to the model's processor), so it is not compared here.
"""

from __future__ import annotations

import itertools

import pytest

from pipelines.core.config import DecodeConfig
from pipelines.media import sampling
from pipelines.models.hints import check_sampling
from pipelines.models.qwen2_vl import QwenVL

vision_process = pytest.importorskip("qwen_vl_utils.vision_process")
QWEN = DecodeConfig(frame_factor=2)  # the defaults as a Qwen2-VL job resolves them

DURATIONS_S = (0.5, 1.0, 1.5, 2.0, 2.38, 3.0, 3.7, 5.0, 7.2, 10.0, 13.3, 30.0, 61.0, 400.0)
SOURCE_FPS = (6.0, 10.0, 24.0, 25.0, 30.0, 59.94)
SETTINGS = (
    {"fps": 2.0, "min_frames": 4, "max_frames": 64},
    {"fps": 1.0, "min_frames": 4, "max_frames": 32},
    {"fps": 0.5, "min_frames": 2, "max_frames": 16},
    {"fps": 3.0, "min_frames": 6, "max_frames": 768},
    {"fps": 2.0, "min_frames": 5, "max_frames": 63},  # odd bounds: both sides round inward
)


def _ours(duration_s: float, setting: dict) -> int:
    return sampling.num_samples(duration_s, DecodeConfig(**{"frame_factor": 2, **setting}))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(map(str, s.values())))
def test_fps_mode_matches_smart_nframes_per_window(setting):
    compared = 0
    for duration_s, source_fps in itertools.product(DURATIONS_S, SOURCE_FPS):
        total_frames = round(duration_s * source_fps)
        # qwen-vl-utils caps at the frames the video has; we keep min_frames and repeat (see
        # sampling), so the grid compares where the cap does not bind and pins the rest.
        capped = total_frames < duration_s * setting["fps"] or total_frames < _ours(
            duration_s, setting
        )
        window_s = total_frames / source_fps  # the length qwen-vl-utils sees
        if capped:
            assert _ours(window_s, setting) >= setting["min_frames"]
            continue
        theirs = vision_process.smart_nframes(dict(setting), total_frames, source_fps)
        assert _ours(window_s, setting) == theirs, (duration_s, source_fps)
        compared += 1
    assert compared >= 60


def test_default_config_matches_qwen_defaults_per_window():
    # What a Qwen2-VL job decodes with: the defaults, the family's frame rules applied.
    cfg = check_sampling(DecodeConfig(), QwenVL.hints, "qwen2_vl")
    assert (cfg.fps, cfg.frame_factor, cfg.min_frames) == (
        vision_process.FPS,
        vision_process.FRAME_FACTOR,
        vision_process.FPS_MIN_FRAMES,
    )
    for total_frames in range(60, 3000, 7):  # 2.4 s .. 2 min at 25 fps
        theirs = vision_process.smart_nframes(
            {"fps": 2.0, "max_frames": cfg.max_frames}, total_frames, 25.0
        )
        assert sampling.num_samples(total_frames / 25.0, cfg) == theirs, total_frames


@pytest.mark.parametrize("nframes", [2, 3, 4, 5, 6, 7, 9, 10, 11, 16, 17, 33])
def test_num_frames_mode_matches_smart_nframes(nframes):
    theirs = vision_process.smart_nframes({"nframes": nframes}, 1000, 25.0)
    cfg = DecodeConfig(fps=None, num_frames=nframes, min_frames=2, max_frames=64, frame_factor=2)
    assert sampling.num_samples(12.3, cfg) == theirs


def test_intended_difference_short_video_keeps_min_frames():
    # 3 frames at 10 fps: qwen-vl-utils gives 2 (capped at total frames, floored to even);
    # we give min_frames=4 and repeat frames, so the clip has the count the model expects.
    assert vision_process.smart_nframes({"fps": 2.0}, 3, 10.0) == 2
    assert sampling.num_samples(0.3, QWEN) == 4


def test_intended_difference_num_frames_is_clamped_to_max_frames():
    assert vision_process.smart_nframes({"nframes": 100}, 1000, 25.0) == 100
    assert sampling.num_samples(40.0, DecodeConfig(fps=None, num_frames=100, frame_factor=2)) == 64


def test_fixed_windows_sum_to_the_per_window_rule():
    # A 25 s video in 10 s windows: each window is counted as a 10 s / 10 s / 5 s video.
    cfg = QWEN
    plans = sampling.plan_clips(25.0, cfg, 1 / 25)
    theirs = [
        vision_process.smart_nframes({"fps": 2.0, "max_frames": 64}, round(length * 25), 25.0)
        for length in (10.0, 10.0, 5.0)
    ]
    assert [len(p.target_ts_s) for p in plans] == theirs == [20, 20, 10]
