"""Vision-encoder stage: sampled frames -> the family's encoder output, serialized."""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch
from safetensors.torch import save as save_tensors

from pipelines.config import ModelConfig, PoolConfig
from pipelines.errors import StageError
from pipelines.models import resolve_family
from pipelines.models.base import FramesInput, VideoLMFamily
from pipelines.records import Clip, EncodedClip
from pipelines.stage import MapStage, Resources
from pipelines.stages.isolate import run_isolated


def sampled_fps(clip: Clip) -> float:
    span_s = clip.ref.end_s - clip.ref.start_s
    return len(clip.frames) / span_s if span_s > 0 else 1.0


class EncodeStage(MapStage[Clip, EncodedClip]):
    name = "encode"

    def __init__(self, model: ModelConfig, pool: PoolConfig) -> None:
        self.model_config = model
        self.pool = pool
        self.batch_size = pool.batch_size
        self.family: VideoLMFamily | None = None

    @property
    def resources(self) -> Resources:
        return Resources(num_cpus=self.pool.num_cpus, num_gpus=self.pool.num_gpus or 0.0)

    @property
    def stateful(self) -> bool:
        return True

    def setup(self) -> None:
        family_cls, _ = resolve_family(self.model_config.model, self.model_config.revision)
        self.family = family_cls(self.model_config)
        self.family.load_encoder()
        torch.set_grad_enabled(False)

    def process_batch(self, items: Sequence[Clip]) -> list[EncodedClip | StageError]:
        if self.family is None:
            self.setup()
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
