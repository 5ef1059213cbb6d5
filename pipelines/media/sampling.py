"""Clip windows and frame sample times: pure arithmetic, no PyAV, so every rule is unit-tested.

Rules (all times in seconds from the stream's first frame):

- Windows are fixed ``clip_s`` slices of ``[0, duration)``; the last one is shorter. A trailing
  sliver shorter than one source frame interval is folded into the previous window rather than
  becoming a clip of its own: it holds at most one frame, and a clip made of that one frame
  repeated ``min_frames`` times would only add noise (and a float duration such as 25.000001
  would otherwise create a phantom clip).
- Frames per clip: ``round(clip_len x fps)`` (or ``num_frames``), clamped to
  ``[min_frames, max_frames]``, then moved to a multiple of ``frame_factor`` that stays inside
  that range.
- Targets are the centres of equal sub-intervals of the window, so they never sit on the
  window edges and are spread evenly however long the window is.
- Each target takes the decoded frame whose PTS is nearest; ties go to the earlier frame. A clip
  with fewer distinct frames than targets therefore repeats frames; that is deliberate, so every
  clip has a frame count the vision model accepts.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.config import DecodeConfig

TIE_EPS_S = 1e-6
"""Distances closer than this count as a tie (float noise), and ties go to the earlier frame."""


@dataclass(frozen=True)
class ClipPlan:
    """One clip window and the times at which it wants a frame."""

    clip_index: int
    start_s: float
    end_s: float
    target_ts_s: tuple[float, ...]


def clip_windows(
    duration_s: float, clip_s: float, frame_interval_s: float
) -> list[tuple[float, float]]:
    """Fixed windows over ``[0, duration_s)``; a tail shorter than one frame interval is folded."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    count = max(1, math.ceil(duration_s / clip_s - 1e-9))
    windows = [(k * clip_s, min((k + 1) * clip_s, duration_s)) for k in range(count)]
    if len(windows) > 1 and windows[-1][1] - windows[-1][0] < frame_interval_s:
        tail_end = windows.pop()[1]
        windows[-1] = (windows[-1][0], tail_end)
    return windows


def num_samples(clip_len_s: float, cfg: DecodeConfig) -> int:
    """How many frames a clip of this length gets (see the module rules)."""
    want = cfg.num_frames if cfg.num_frames is not None else math.floor(clip_len_s * cfg.fps + 0.5)
    lowest, highest = _valid_counts(cfg)
    nearest = math.floor(want / cfg.frame_factor + 0.5) * cfg.frame_factor
    return min(max(nearest, lowest), highest)


def valid_count_at_least(n: int, cfg: DecodeConfig) -> int:
    """The smallest valid frame count that holds ``n`` frames (capped at the largest valid one)."""
    lowest, highest = _valid_counts(cfg)
    return min(max(math.ceil(n / cfg.frame_factor) * cfg.frame_factor, lowest), highest)


def _valid_counts(cfg: DecodeConfig) -> tuple[int, int]:
    """Smallest and largest multiple of ``frame_factor`` inside ``[min_frames, max_frames]``."""
    factor = cfg.frame_factor
    lowest = math.ceil(cfg.min_frames / factor) * factor
    highest = (cfg.max_frames // factor) * factor
    if lowest > highest:
        raise ValueError(
            f"no multiple of frame_factor={factor} lies in [min_frames={cfg.min_frames}, "
            f"max_frames={cfg.max_frames}]; widen the range"
        )
    return lowest, highest


def target_times(start_s: float, end_s: float, n: int) -> tuple[float, ...]:
    """Centres of ``n`` equal sub-intervals of ``[start_s, end_s)``."""
    step = (end_s - start_s) / n
    return tuple(start_s + (j + 0.5) * step for j in range(n))


def plan_clips(duration_s: float, cfg: DecodeConfig, frame_interval_s: float) -> list[ClipPlan]:
    """Every clip of a video whose duration is known: windows, then targets inside each."""
    plans = []
    for index, (start, end) in enumerate(clip_windows(duration_s, cfg.clip_s, frame_interval_s)):
        n = num_samples(end - start, cfg)
        plans.append(ClipPlan(index, start, end, target_times(start, end, n)))
    return plans


def plan_clip(index: int, start_s: float, end_s: float, cfg: DecodeConfig) -> ClipPlan:
    """One window's plan; used when a window has to be cut short after decoding."""
    return ClipPlan(
        index, start_s, end_s, target_times(start_s, end_s, num_samples(end_s - start_s, cfg))
    )


def is_nearer_or_tie(target_s: float, earlier_s: float, later_s: float) -> bool:
    """Whether the earlier frame wins target ``target_s`` (nearest PTS, ties to the earlier)."""
    return (target_s - earlier_s) <= (later_s - target_s) + TIE_EPS_S


def nearest_indices(frame_ts_s: Sequence[float], targets_s: Sequence[float]) -> list[int]:
    """For sorted frame times, the index of the nearest frame to each target (reference rule)."""
    if not frame_ts_s:
        raise ValueError("no frames to pick from")
    picks = []
    for t in targets_s:
        i = bisect.bisect_left(frame_ts_s, t)
        if i == 0:
            picks.append(0)
        elif i == len(frame_ts_s):
            picks.append(i - 1)
        else:
            picks.append(i - 1 if is_nearer_or_tie(t, frame_ts_s[i - 1], frame_ts_s[i]) else i)
    return picks
