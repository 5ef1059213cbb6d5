"""Language-model stage: encoder output + chat prompt -> text."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from safetensors.torch import load as load_tensors
from transformers import TextStreamer

from pipelines.core.config import GenerationConfig, ModelConfig, PoolConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.records import Caption, EncodedClip
from pipelines.models.base import GenRequest
from pipelines.stages.isolate import run_isolated
from pipelines.stages.model import ModelStage


class GenerateStage(ModelStage[EncodedClip, Caption]):
    name = "generate"

    def __init__(self, model: ModelConfig, pool: PoolConfig, generation: GenerationConfig) -> None:
        super().__init__(model, pool)
        self.generation = generation

    def setup(self) -> None:
        self.family = self.new_family()
        self.family.load_lm()

    def process_batch(self, items: Sequence[EncodedClip]) -> list[Caption | StageError]:
        return self.process_with(items, self.generation)

    def process_with(
        self, items: Sequence[EncodedClip], settings: GenerationConfig, streamer=None
    ) -> list[Caption | StageError]:
        """``process_batch`` with per-call decoding settings (online requests carry their own)."""
        started = time.perf_counter()
        # Several asks of one clip share its encoded bytes: deserialize them once.
        tensors: dict[int, dict] = {}
        requests, todo = [], []
        outputs: list = [None] * len(items)
        for i, c in enumerate(items):
            ask = c.ref.ask
            if ask.history and not self.family.supports_chat:
                message = f"{self.model_config.model} has no chat template: no follow-up turns"
                outputs[i] = StageError(ErrorCode.INVALID_REQUEST, message, self.name)
                continue
            if id(c.encoded) not in tensors:
                tensors[id(c.encoded)] = load_tensors(c.encoded)
            requests.append(GenRequest(tensors[id(c.encoded)], ask.text, ask.history))
            todo.append(i)

        def generate(batch: Sequence[GenRequest]):
            return self.family.generate(batch, settings, streamer=streamer)

        # A clip with many asks turns one batch of clips into many requests: keep each
        # generate call to batch_size requests so memory does not grow with the asks.
        done = []
        for i in range(0, len(requests), self.batch_size):
            done += run_isolated(generate, requests[i : i + self.batch_size], self.name)
        for i, out in zip(todo, done, strict=True):
            outputs[i] = out
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
