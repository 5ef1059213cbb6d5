"""Vision-encoder stage: sampled frames -> the family's encoder output, serialized."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from safetensors.torch import save as save_tensors

from pipelines.core.errors import StageError
from pipelines.core.records import Clip, EncodedClip, clip_from_row, encoded_update
from pipelines.core.stage import RowCodec
from pipelines.models.base import FramesInput
from pipelines.stages.isolate import run_isolated
from pipelines.stages.model import ModelStage


def sampled_fps(clip: Clip) -> float:
    span_s = clip.ref.end_s - clip.ref.start_s
    return len(clip.frames) / span_s if span_s > 0 else 1.0


class EncodeStage(ModelStage[Clip, EncodedClip]):
    name = "encode"
    codec = RowCodec(clip_from_row, encoded_update, consumed="frames", defaults={"encoded": b""})

    def setup(self) -> None:
        self.family = self.new_family()
        self.family.load_encoder()

    def process_batch(
        self, items: Sequence[Clip], **options: Any
    ) -> list[EncodedClip | StageError]:
        started = time.perf_counter()
        inputs = [FramesInput(c.frames, sampled_fps(c)) for c in items]
        outputs = run_isolated(self.family.encode, inputs, self.name)
        per_item_s = (time.perf_counter() - started) / max(1, len(items))
        return [
            out
            if isinstance(out, StageError)
            else EncodedClip(clip.ref, save_tensors(out), encode_s=per_item_s)
            for clip, out in zip(items, outputs, strict=True)
        ]
