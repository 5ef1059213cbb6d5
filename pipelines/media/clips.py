"""Frames into clips: each clip's targets take the decoded frame nearest them (``sampling``
has the arithmetic), converted to RGB only when picked.

``ClipSampler`` holds at most one undecided raw frame plus the RGB frames already picked for the
clips not yet emitted. It is also the ``frames.Guide`` of the decode: it says which times are
still wanted, so frames no target needs are never decoded.

- Windows come from the declared duration (the stream's, else the container's). When the
  container declares none, or frames continue past the declared end, further windows are full
  ``clip_s`` slices after the planned ones, and the last one is cut where the frames end.
- When the frames stop well before the declared duration (a truncated file) or the demuxer fails
  mid-stream, the clip in progress is cut at the last frame, keeps the targets it had reached
  (same spacing), repeats its last pick up to a valid frame count and is marked ``partial``. A
  clip is emitted only once a frame at or after its end has been decoded, so the clip that gets
  ``partial`` is the one the file broke in.
- Frames are scaled in libswscale (area filter) so the longer *displayed* side (sample aspect
  ratio applied) is at most ``max_side_px``, then rotated upright by the display matrix (first
  frame's rotation, rounded to 90 degrees; flips are ignored). Later frames are scaled to the
  first frame's output size, so a mid-stream resolution change keeps one shape per video.
- Exact mode stays exact: a pick that a skipped frame could have beaten (only possible with
  sparse variable-rate frames) raises ``SkippedFrameMayWin``, and the caller decodes again
  without skipping. ``DecodedClip.frame_offset_s`` records pick minus target.
"""

from __future__ import annotations

import bisect
import dataclasses
import math

import numpy as np

from pipelines.core.config import DecodeConfig
from pipelines.media import sampling
from pipelines.media.frames import Frame, Opened, SkippedFrameMayWin

_TRUNCATION_SLACK_S = 1.0  # containers often declare audio's longer duration; don't call that "cut"
_OVERRUN_MARGIN_S = 0.1  # frames this far past the declared end mean the declaration was wrong


@dataclasses.dataclass(frozen=True)
class DecodedClip:
    """One clip window and its sampled frames (uint8 RGB, upright, NHWC)."""

    clip_index: int
    start_s: float
    end_s: float
    frame_ts_s: tuple[float, ...]
    frames: np.ndarray
    partial: bool = False
    frame_offset_s: tuple[float, ...] = ()
    """Per frame, picked frame time minus its target time (0 when a frame sits on its target)."""


@dataclasses.dataclass
class _Builder:
    """A clip being filled: its plan, and the RGB frame picked for each target so far."""

    plan: sampling.ClipPlan
    picks: list[tuple[float, np.ndarray]] = dataclasses.field(default_factory=list)

    @property
    def resolved(self) -> bool:
        return len(self.picks) == len(self.plan.target_ts_s)

    @property
    def next_target_s(self) -> float:
        return self.plan.target_ts_s[len(self.picks)]


class ClipSampler:
    """Turns the frame stream into clips: nearest-PTS pick per target, one frame of lookahead."""

    def __init__(
        self,
        opened: Opened,
        cfg: DecodeConfig,
        windows: list[tuple[float, float]] | None = None,
    ) -> None:
        self.cfg = cfg
        self.opened = opened
        self.skipped_s = opened.skipped_s
        self.interval_s = opened.frame_interval_s
        self.sar = opened.sar
        if windows is not None:  # from a first pass (scenes, or none with unknown duration)
            self.plans = sampling.plan_windows(windows, cfg)
        elif opened.duration_s is not None:
            self.plans = sampling.plan_clips(opened.duration_s, cfg, self.interval_s)
        else:
            self.plans = []
        # A file cut short is recognised against what it declared, else against the plan.
        self.expected_end_s = opened.duration_s or (self.plans[-1].end_s if self.plans else None)
        # Open-ended: windows continue past the planned ones, because the container declared no
        # duration or frames turned up after the declared end (some MPEG-PS files say 0.05 s).
        self.open_ended = not self.plans
        self.pending: list[_Builder] = []  # started, not yet emitted
        self.started = 0
        self.prev: Frame | None = None
        self.converted: tuple[int, np.ndarray] | None = None
        self.out_size: tuple[int, int] | None = None  # (width, height) before rotation
        self.rot90_k = 0

    def _plan(self, index: int) -> sampling.ClipPlan | None:
        if index < len(self.plans):
            return self.plans[index]
        if not self.open_ended:
            return None
        step = self.cfg.clip_s - self.cfg.overlap_s
        start = (self.plans[-1].end_s if self.plans else 0.0) + (index - len(self.plans)) * step
        return sampling.plan_clip(index, start, start + self.cfg.clip_s, self.cfg)

    def wants_near(self, time_s: float, margin_s: float) -> bool:
        """Whether an unresolved target lies within ``margin_s`` of ``time_s``."""
        for builder in self.pending:
            targets = builder.plan.target_ts_s
            i = bisect.bisect_left(targets, time_s - margin_s, lo=len(builder.picks))
            if i < len(targets) and targets[i] <= time_s + margin_s:
                return True
        index = self.started
        while (plan := self._plan(index)) is not None and plan.start_s <= time_s + margin_s:
            i = bisect.bisect_left(plan.target_ts_s, time_s - margin_s)
            if i < len(plan.target_ts_s) and plan.target_ts_s[i] <= time_s + margin_s:
                return True
            index += 1
        return False

    def next_target_s(self) -> float:
        """The earliest time a sample still wants (``inf`` when none does)."""
        wanted = [b.next_target_s for b in self.pending if not b.resolved]
        if (plan := self._plan(self.started)) is not None:
            wanted.append(plan.target_ts_s[0])
        return min(wanted, default=math.inf)

    def feed(self, frame: Frame) -> list[DecodedClip]:
        # A little past the declared end is normal (it is often the last PTS); well past means
        # the declaration was wrong. The window opened then starts at the declared end, so a
        # target closer to it than this margin may miss its nearest frame by up to the margin.
        if self.plans and frame.ts_s > self.plans[-1].end_s + _OVERRUN_MARGIN_S:
            self.open_ended = True
        while (plan := self._plan(self.started)) is not None and plan.start_s <= frame.ts_s:
            self.pending.append(_Builder(plan))
            self.started += 1
        for builder in self.pending:
            while not builder.resolved and builder.next_target_s <= frame.ts_s:
                t = builder.next_target_s
                prev = self.prev
                use_prev = prev is not None and sampling.is_nearer_or_tie(t, prev.ts_s, frame.ts_s)
                pick = prev if use_prev else frame
                self._check_no_skipped_frame_wins(t, pick.ts_s, frame.ts_s)
                builder.picks.append(self._rgb(pick))
        self.prev = frame
        ready = []
        while (
            self.pending and self.pending[0].resolved and self.pending[0].plan.end_s <= frame.ts_s
        ):
            ready.append(self._emit(self.pending.pop(0)))
        return ready

    def _check_no_skipped_frame_wins(self, target_s: float, pick_s: float, next_s: float) -> None:
        """Raise if a skipped frame between the two decoded neighbours beats the pick."""
        for s in self.skipped_s[: bisect.bisect_left(self.skipped_s, next_s)]:
            earlier, later = (s, pick_s) if s < pick_s else (pick_s, s)
            winner = earlier if sampling.is_nearer_or_tie(target_s, earlier, later) else later
            if winner == s:
                raise SkippedFrameMayWin(
                    f"skipped frame at {s:.3f} s beats the pick for {target_s:.3f} s"
                )

    def finish(self, broken: bool) -> list[DecodedClip]:
        """Emit what is left when the frames stop: cut the window in progress if they stopped early."""
        last = self.prev
        if last is None:
            return []
        content_end_s = max(last.ts_s, self.opened.end_packet_s)
        covered_end_s = content_end_s + self.interval_s
        # Windows that packets reached but no decoded frame did (keyframes mode: no keyframe
        # after their start) take the last decoded frame, the nearest one there is.
        while (plan := self._plan(self.started)) is not None and plan.start_s <= content_end_s:
            self.pending.append(_Builder(plan))
            self.started += 1
        stopped_early = broken or (
            not self.open_ended
            and self.expected_end_s is not None
            and covered_end_s < self.expected_end_s - _TRUNCATION_SLACK_S
        )
        cut = stopped_early or self.open_ended
        clips = []
        for k, builder in enumerate(self.pending):
            if cut and builder.plan.end_s > covered_end_s:
                if k > 0 and self.pending[k - 1].plan.end_s >= covered_end_s:
                    continue  # overlapping windows: the previous one already covers what is left
                self._cut(builder, covered_end_s)
            while not builder.resolved:
                builder.picks.append(self._rgb(last))
            clips.append(self._emit(builder))
        self.pending = []
        if clips and stopped_early:
            clips[-1] = dataclasses.replace(clips[-1], partial=True)
        return clips

    def _cut(self, builder: _Builder, end_s: float) -> None:
        """End the window at ``end_s``, keeping the targets the frames reached (same spacing),
        then repeat the last pick up to a valid frame count."""
        plan = builder.plan
        reached = [t for t in plan.target_ts_s if t < end_s] or [plan.target_ts_s[0]]
        while len(builder.picks) < len(reached):
            builder.picks.append(self._rgb(self.prev))
        count = sampling.valid_count_at_least(len(builder.picks), self.cfg)
        builder.picks += [builder.picks[-1]] * (count - len(builder.picks))
        padded = tuple(reached) + (reached[-1],) * (count - len(reached))
        builder.plan = sampling.ClipPlan(plan.clip_index, plan.start_s, end_s, padded)

    def _emit(self, builder: _Builder) -> DecodedClip:
        plan = builder.plan
        frame_ts_s = tuple(ts for ts, _ in builder.picks)
        return DecodedClip(
            clip_index=plan.clip_index,
            start_s=plan.start_s,
            end_s=plan.end_s,
            frame_ts_s=frame_ts_s,
            frames=np.stack([rgb for _, rgb in builder.picks]),
            frame_offset_s=tuple(
                ts - t for ts, t in zip(frame_ts_s, plan.target_ts_s, strict=True)
            ),
        )

    def _rgb(self, frame: Frame) -> tuple[float, np.ndarray]:
        if self.converted is not None and self.converted[0] == frame.seq:
            return frame.ts_s, self.converted[1]
        raw = frame.raw
        if self.out_size is None:
            self.out_size = _output_size(raw.width, raw.height, self.sar, self.cfg.max_side_px)
            self.rot90_k = round(raw.rotation / 90) % 4
        width, height = self.out_size
        rgb = raw.reformat(
            width=width, height=height, format="rgb24", interpolation="AREA"
        ).to_ndarray()
        if self.rot90_k:
            # The display matrix angle is counter-clockwise, as is np.rot90.
            rgb = np.ascontiguousarray(np.rot90(rgb, self.rot90_k))
        self.converted = (frame.seq, rgb)
        return frame.ts_s, rgb


def _output_size(width: int, height: int, sar: float, max_side_px: int) -> tuple[int, int]:
    display_w = width * sar
    scale = min(1.0, max_side_px / max(display_w, height))
    return max(1, round(display_w * scale)), max(1, round(height * scale))
