"""The sampling rules, exactly: windows, frame counts, target times, nearest-PTS picks."""

from __future__ import annotations

import pytest

from pipelines.core.config import DecodeConfig
from pipelines.media import sampling


def cfg(**overrides) -> DecodeConfig:
    # Qwen-VL's rule (pairs of frames) unless a test says otherwise: the sampling rules
    # under test are the ones a Qwen job decodes with.
    return DecodeConfig(**{"frame_factor": 2, **overrides})


def test_windows_cover_duration_with_a_shorter_last_one():
    assert sampling.clip_windows(25.0, 10.0, 0.1) == [(0.0, 10.0), (10.0, 20.0), (20.0, 25.0)]


def test_exact_multiple_gives_no_empty_tail():
    assert sampling.clip_windows(20.0, 10.0, 0.1) == [(0.0, 10.0), (10.0, 20.0)]


def test_tail_shorter_than_one_frame_is_folded_into_previous_window():
    assert sampling.clip_windows(20.04, 10.0, 0.1) == [(0.0, 10.0), (10.0, 20.04)]
    # One frame interval or longer is a clip of its own.
    assert sampling.clip_windows(20.1, 10.0, 0.1) == [(0.0, 10.0), (10.0, 20.0), (20.0, 20.1)]


def test_video_shorter_than_a_frame_still_gets_one_window():
    assert sampling.clip_windows(0.02, 10.0, 0.04) == [(0.0, 0.02)]


def test_non_positive_duration_is_refused():
    with pytest.raises(ValueError):
        sampling.clip_windows(0.0, 10.0, 0.1)


@pytest.mark.parametrize(
    ("clip_len_s", "expected"),
    [
        (10.0, 20),  # 10 s x 2 fps
        (5.0, 10),
        (2.38, 4),  # 4.76 -> floored to a multiple of 2, as qwen-vl-utils does
        (2.6, 4),  # 5.2 -> 4
        (3.0, 6),
        (1.0, 4),  # 2 -> min_frames
        (0.1, 4),
        (100.0, 64),  # 200 -> max_frames
    ],
)
def test_frame_count_from_fps(clip_len_s, expected):
    assert sampling.num_samples(clip_len_s, cfg()) == expected


def test_frame_count_from_num_frames_ignores_length():
    config = cfg(fps=None, num_frames=8)
    assert sampling.num_samples(0.5, config) == 8
    assert sampling.num_samples(500.0, config) == 8


def test_num_frames_rounds_half_to_even_like_qwen_vl_utils():
    counts = [sampling.num_samples(10.0, cfg(fps=None, num_frames=n)) for n in (5, 7, 9, 11)]
    assert counts == [4, 8, 8, 12]  # round(2.5) = 2, round(3.5) = 4, ...


def test_frame_count_is_a_multiple_of_factor_never_below_min():
    config = cfg(min_frames=5, max_frames=16, frame_factor=4)
    assert sampling.num_samples(1.0, config) == 8  # 2 -> min 5 -> smallest multiple of 4 >= 5
    assert sampling.num_samples(5.0, config) == 8  # 10 -> floored to a multiple of 4
    assert sampling.num_samples(6.0, config) == 12
    assert sampling.num_samples(60.0, config) == 16


def test_impossible_frame_range_is_a_config_error():
    with pytest.raises(ValueError, match="frame_factor"):
        sampling.num_samples(10.0, cfg(min_frames=5, max_frames=7, frame_factor=4))


def test_valid_count_at_least_rounds_up_within_range():
    config = cfg(min_frames=4, max_frames=10, frame_factor=4)
    assert [sampling.valid_count_at_least(n, config) for n in (1, 4, 5, 9, 30)] == [4, 4, 8, 8, 8]


def test_targets_are_centres_of_equal_sub_intervals():
    assert sampling.target_times(20.0, 25.0, 4) == pytest.approx((20.625, 21.875, 23.125, 24.375))


def test_plan_of_25s_video():
    plans = sampling.plan_clips(25.0, cfg(clip_s=10.0, fps=2.0), 0.1)
    assert [(p.clip_index, p.start_s, p.end_s, len(p.target_ts_s)) for p in plans] == [
        (0, 0.0, 10.0, 20),
        (1, 10.0, 20.0, 20),
        (2, 20.0, 25.0, 10),
    ]
    assert plans[2].target_ts_s == pytest.approx([20.25 + 0.5 * j for j in range(10)])


def test_nearest_indices_picks_nearest_and_breaks_ties_to_earlier():
    frames = [0.0, 1.0, 2.0, 4.0]
    assert sampling.nearest_indices(frames, [-1.0, 0.4, 0.5, 0.6, 2.9, 3.0, 3.1, 9.0]) == [
        0,
        0,
        0,  # tie between 0.0 and 1.0 -> earlier
        1,
        2,
        2,  # tie between 2.0 and 4.0 -> earlier
        3,
        3,
    ]


def test_nearest_indices_repeats_frames_when_targets_outnumber_frames():
    assert sampling.nearest_indices([0.0, 0.04], [0.01, 0.02, 0.03, 0.035]) == [0, 0, 1, 1]


def test_overlapping_windows_step_by_clip_minus_overlap():
    assert sampling.clip_windows(25.0, 10.0, 0.1, overlap_s=4.0) == [
        (0.0, 10.0),
        (6.0, 16.0),
        (12.0, 22.0),
        (18.0, 25.0),
    ]
    # The last window adds less than a frame beyond the previous one: folded.
    assert sampling.clip_windows(16.05, 10.0, 0.1, overlap_s=4.0) == [(0.0, 10.0), (6.0, 16.05)]
    with pytest.raises(ValueError, match="overlap_s"):
        sampling.clip_windows(25.0, 10.0, 0.1, overlap_s=10.0)


def test_scene_windows_merge_short_and_split_long_scenes():
    # Scenes: [0,1) short -> merged into the next; [1,30) -> [0,30) split in two (max 20);
    # [30,31.5) short -> merged with [31.5, 40); the end is 40.
    windows = sampling.scene_windows([1.0, 30.0, 31.5], 40.0, min_clip_s=2.0, max_clip_s=20.0)
    assert windows == [(0.0, 15.0), (15.0, 30.0), (30.0, 40.0)]


def test_scene_windows_last_short_scene_joins_the_previous_one():
    assert sampling.scene_windows([5.0, 9.5], 10.0, 2.0, 60.0) == [(0.0, 5.0), (5.0, 10.0)]
    assert sampling.scene_windows([], 10.0, 2.0, 60.0) == [(0.0, 10.0)]
    assert sampling.scene_windows([0.5], 1.0, 2.0, 60.0) == [(0.0, 1.0)]  # all shorter: one


def test_plan_windows_numbers_clips_and_places_targets():
    plans = sampling.plan_windows([(0.0, 3.0), (3.0, 5.0)], cfg())
    assert [(p.clip_index, p.start_s, p.end_s) for p in plans] == [(0, 0.0, 3.0), (1, 3.0, 5.0)]
    assert plans[0].target_ts_s == pytest.approx([0.25, 0.75, 1.25, 1.75, 2.25, 2.75])
    assert plans[1].target_ts_s == pytest.approx([3.25, 3.75, 4.25, 4.75])
