"""Clip windows and frame sample times: pure arithmetic, no PyAV, so every rule is unit-tested.

Rules (all times in seconds from the stream's first frame):

- ``fixed`` windows are ``clip_s`` long and start every ``clip_s - overlap_s`` seconds over
  ``[0, duration)``; the last one ends at the duration. A trailing sliver (the part of the last
  window not already covered by the previous one) shorter than one source frame interval is
  folded into the previous window rather than becoming a clip of its own: it holds at most one
  new frame, and a clip made of that frame repeated ``min_frames`` times would only add noise
  (and a float duration such as 25.000001 would otherwise create a phantom clip).
- ``scenes`` windows run from cut to cut; a scene shorter than ``min_clip_s`` is merged into the
  next one (the last into the previous one), and one longer than ``max_clip_s`` is split into
  equal parts.
- Frames per clip follow qwen-vl-utils' ``smart_nframes`` applied to the window:
  ``floor_by_factor(clamp(clip_len x fps, ceil_by_factor(min_frames), floor_by_factor(max_frames)))``
  in fps mode, ``round_by_factor(num_frames)`` (Python's half-to-even ``round``) clamped to the
  same range in num_frames mode. Two deliberate differences, both tested against the package:
  qwen-vl-utils also caps the count at the number of source frames (so a 3-frame video gets 2),
  where we keep ``min_frames`` and repeat frames, because every clip must have a count the
  model accepts; and it does not clamp ``nframes`` to ``[min_frames, max_frames]``, where we do,
  because ``max_frames`` bounds memory.
- Targets are the centres of equal sub-intervals of the window, so they never sit on the
  window edges and are spread evenly however long the window is. (qwen-vl-utils takes
  ``linspace(0, total_frames - 1, n).round()`` over the whole video, which always includes the
  first and the last frame; per window that would sample each cut's two sides twice and bias
  short clips to their edges, so we keep the centres.)
- Each target takes the decoded frame whose PTS is nearest; ties go to the earlier frame. A clip
  with fewer distinct frames than targets therefore repeats frames; that is deliberate, so every
  clip has a frame count the vision model accepts.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass

from pipelines.core.config import DecodeConfig

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
    duration_s: float, clip_s: float, frame_interval_s: float, overlap_s: float = 0.0
) -> list[tuple[float, float]]:
    """Fixed windows over ``[0, duration_s)`` (see the module rules for the folded tail)."""
    if duration_s <= 0:
        raise ValueError(f"duration_s must be positive, got {duration_s}")
    if not 0 <= overlap_s < clip_s:
        raise ValueError(f"overlap_s={overlap_s} must be in [0, clip_s={clip_s})")
    step = clip_s - overlap_s
    count = max(1, math.ceil((duration_s - clip_s) / step - 1e-9) + 1)
    windows = [(k * step, min(k * step + clip_s, duration_s)) for k in range(count)]
    if len(windows) > 1 and windows[-1][1] - windows[-2][1] < frame_interval_s:
        tail_end = windows.pop()[1]
        windows[-1] = (windows[-1][0], tail_end)
    return windows


def scene_windows(
    cuts_s: Sequence[float], end_s: float, min_clip_s: float, max_clip_s: float
) -> list[tuple[float, float]]:
    """Windows from scene cut times over ``[0, end_s)``: short scenes merged, long ones split."""
    if end_s <= 0:
        raise ValueError(f"end_s must be positive, got {end_s}")
    bounds = [0.0] + sorted(c for c in set(cuts_s) if 0 < c < end_s) + [end_s]
    merged: list[float] = [0.0]
    for b in bounds[1:-1]:
        if b - merged[-1] >= min_clip_s:
            merged.append(b)
    if len(merged) > 1 and end_s - merged[-1] < min_clip_s:
        merged.pop()  # the last scene is too short: it joins the previous one
    merged.append(end_s)
    windows = []
    for start, stop in zip(merged, merged[1:], strict=False):
        parts = max(1, math.ceil((stop - start) / max_clip_s - 1e-9))
        step = (stop - start) / parts
        windows += [
            (start + k * step, stop if k == parts - 1 else start + (k + 1) * step)
            for k in range(parts)
        ]
    return windows


def num_samples(clip_len_s: float, cfg: DecodeConfig) -> int:
    """How many frames a clip of this length gets (see the module rules)."""
    lowest, highest = _valid_counts(cfg)
    factor = cfg.frame_factor or 1  # None (the family's) is resolved before decoding
    if cfg.num_frames is not None:
        wanted = round(cfg.num_frames / factor) * factor
        return min(max(wanted, lowest), highest)
    wanted = min(max(clip_len_s * cfg.fps, lowest), highest)
    return max(math.floor(wanted / factor + 1e-9) * factor, lowest)


def valid_count_at_least(n: int, cfg: DecodeConfig) -> int:
    """The smallest valid frame count that holds ``n`` frames (capped at the largest valid one)."""
    lowest, highest = _valid_counts(cfg)
    factor = cfg.frame_factor or 1
    return min(max(math.ceil(n / factor) * factor, lowest), highest)


def _valid_counts(cfg: DecodeConfig) -> tuple[int, int]:
    """Smallest and largest multiple of ``frame_factor`` inside ``[min_frames, max_frames]``."""
    factor = cfg.frame_factor or 1  # None (the family's) is resolved before decoding
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
    """Every fixed clip of a video whose duration is known: windows, then targets inside each."""
    return plan_windows(clip_windows(duration_s, cfg.clip_s, frame_interval_s, cfg.overlap_s), cfg)


def plan_windows(windows: Sequence[tuple[float, float]], cfg: DecodeConfig) -> list[ClipPlan]:
    """Targets inside each given window."""
    return [plan_clip(index, start, end, cfg) for index, (start, end) in enumerate(windows)]


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
