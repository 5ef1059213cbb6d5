"""Scene chunking's first pass: where the picture changes, then windows between the cuts.

Each frame is reduced to a 32x18 grey thumbnail (small enough to ignore noise and cost
nothing); a cut is where the mean absolute difference between consecutive thumbnails exceeds
``scene_threshold``. Only one thumbnail and the cut times are held. The frames are sampled in a
second pass, because a window's targets depend on where it ends, which is known only at the next
cut: picking in this pass would mean holding every full-size frame of the open scene.
"""

from __future__ import annotations

import numpy as np

from pipelines.core.config import DecodeConfig
from pipelines.media import sampling
from pipelines.media.frames import Clock, Opened, iter_frames

_THUMB_SIZE = (32, 18)


def scene_windows(
    opened: Opened, cfg: DecodeConfig, clock: Clock
) -> list[tuple[float, float]] | None:
    """Clip windows from the scene cuts of the whole video; None when it has no frame."""
    cuts: list[float] = []
    prev: np.ndarray | None = None
    last_ts = None
    for frame in iter_frames(opened, cfg, clock):
        thumb = frame.raw.reformat(
            width=_THUMB_SIZE[0], height=_THUMB_SIZE[1], format="gray", interpolation="AREA"
        ).to_ndarray()
        thumb = thumb.astype(np.int16)
        if prev is not None and float(np.abs(thumb - prev).mean()) > cfg.scene_threshold:
            cuts.append(frame.ts_s)
        prev, last_ts = thumb, frame.ts_s
    if last_ts is None:
        return None  # no frame: the sampling pass reports the error
    return sampling.scene_windows(
        cuts, last_ts + opened.frame_interval_s, cfg.min_clip_s, cfg.max_clip_s
    )
