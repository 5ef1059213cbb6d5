"""Language-model stage: encoder output + chat prompt -> text."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch
from safetensors.torch import load as load_tensors
from transformers import TextStreamer

from pipelines.config import GenerationConfig, ModelConfig, PoolConfig
from pipelines.errors import StageError
from pipelines.models import resolve_family
from pipelines.models.base import GenRequest, VideoLMFamily
from pipelines.records import Caption, EncodedClip
from pipelines.stage import MapStage, Resources
from pipelines.stages.isolate import run_isolated


class GenerateStage(MapStage[EncodedClip, Caption]):
    name = "generate"

    def __init__(self, model: ModelConfig, pool: PoolConfig, generation: GenerationConfig) -> None:
        self.model_config = model
        self.pool = pool
        self.generation = generation
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
        self.family.load_lm()
        torch.set_grad_enabled(False)

    def process_batch(self, items: Sequence[EncodedClip]) -> list[Caption | StageError]:
        return self.process_with(items, self.generation)

    def process_with(
        self, items: Sequence[EncodedClip], settings: GenerationConfig, streamer=None
    ) -> list[Caption | StageError]:
        """``process_batch`` with per-call decoding settings (online requests carry their own)."""
        if self.family is None:
            self.setup()
        started = time.perf_counter()
        requests = [GenRequest(load_tensors(c.encoded), c.ref.prompt) for c in items]

        def generate(batch: Sequence[GenRequest]):
            return self.family.generate(batch, settings, streamer=streamer)

        outputs = run_isolated(generate, requests, self.name)
        per_item_s = (time.perf_counter() - started) / max(1, len(items))
        results: list[Caption | StageError] = []
        for clip, out in zip(items, outputs, strict=True):
            if isinstance(out, StageError):
                results.append(out)
            else:
                results.append(
                    Caption(clip.ref, out.text, out.prompt_tokens, len(out.token_ids), per_item_s)
                )
        return results

    def stream(
        self, item: EncodedClip, settings: GenerationConfig, on_text: Callable[[str], None]
    ) -> Caption | StageError:
        """Generate for one item, calling ``on_text`` with each new piece of text."""
        if self.family is None:
            self.setup()
        streamer = CallbackStreamer(self.family.tokenizer, on_text)
        return self.process_with([item], settings, streamer=streamer)[0]


class CallbackStreamer(TextStreamer):
    """Hands decoded text to a callback as soon as it forms whole characters/words."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)
