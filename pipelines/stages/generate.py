"""Language-model stage: encoder output + chat prompt -> text."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from safetensors.torch import load as load_tensors
from transformers import TextStreamer

from pipelines.core.config import ContextConfig, GenerationConfig, ModelConfig, PoolConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.records import (
    Caption,
    EncodedClip,
    caption_update,
    encoded_from_row,
    expand_asks,
)
from pipelines.core.stage import RowCodec
from pipelines.models.base import GenRequest
from pipelines.stages.context import Rendered, render_prompt
from pipelines.stages.isolate import run_isolated
from pipelines.stages.model import ModelStage
from pipelines.stages.token_batches import PadCount, token_batches

# With a token budget, an actor takes this many batches' worth of rows at a time: enough
# requests to group by prompt length, few enough that rows do not wait long.
GROUP_BATCHES = 4


class GenerateStage(ModelStage[EncodedClip, Caption]):
    name = "generate"
    # Each ask of a clip is its own row, all sharing the clip's one encoding.
    codec = RowCodec(encoded_from_row, caption_update, consumed="encoded", expand=expand_asks)
    group_by_length = True
    """Cut each call's requests into generate batches of similar prompt length (False: in
    arrival order, as before token budgets; kept for ``bench/batching.py``)."""

    def __init__(
        self,
        model: ModelConfig,
        pool: PoolConfig,
        generation: GenerationConfig,
        context: ContextConfig | None = None,
    ) -> None:
        super().__init__(model, pool)
        self.generation = generation
        self.call_rows = pool.batch_size
        """Most requests per generate call; ``batch_size`` is what one call of the stage gets."""
        if pool.batch_tokens is not None:
            self.batch_size = pool.batch_size * GROUP_BATCHES
        self.pads = PadCount()
        """Prompt tokens this actor sent to generate and how many were padding."""
        self.context = context or ContextConfig()
        """How a clip's speech and the video's context enter its prompt (``stages.context``)."""

    def setup(self) -> None:
        self.family = self.new_family()
        self.family.load_lm()

    def process_batch(
        self,
        items: Sequence[EncodedClip],
        settings: GenerationConfig | None = None,
        streamer=None,
    ) -> list[Caption | StageError]:
        """Captions for the items; ``settings`` replace the stage's decoding settings for
        this call (online requests carry their own), ``streamer`` gets the tokens of a
        single item as they are generated."""
        settings = settings or self.generation
        started = time.perf_counter()
        # Several asks of one clip share its encoded bytes: deserialize them once.
        tensors: dict[int, dict] = {}
        requests, todo = [], []
        outputs: list = [None] * len(items)
        rendered: list[Rendered | None] = [None] * len(items)
        for i, c in enumerate(items):
            ask = c.ref.ask
            if ask.history and not self.family.supports_chat:
                message = f"{self.model_config.model} has no chat template: no follow-up turns"
                outputs[i] = StageError(ErrorCode.INVALID_REQUEST, message, self.name)
                continue
            if id(c.encoded) not in tensors:
                tensors[id(c.encoded)] = load_tensors(c.encoded)
            rendered[i] = render_prompt(
                ask.text, c.ref.speech, c.ref.video_context, self.context, self.family.tokenizer
            )
            requests.append(GenRequest(tensors[id(c.encoded)], rendered[i].prompt, ask.history))
            todo.append(i)

        def generate(batch: Sequence[GenRequest]):
            return self.family.generate(batch, settings, streamer=streamer)

        # A clip with many asks turns one batch of clips into many requests: keep each
        # generate call to batch_size requests (and the token budget) so memory does not
        # grow with the asks; similar prompt lengths together waste fewer pad tokens.
        lengths = [self._prompt_length(r) for r in requests]
        batches = token_batches(
            lengths,
            self.call_rows,
            self.pool.batch_tokens,
            settings.max_new_tokens,
            by_length=self.group_by_length,
        )
        for batch in batches:
            self.pads.add([lengths[k] for k in batch])
            done = run_isolated(generate, [requests[k] for k in batch], self.name)
            for k, out in zip(batch, done, strict=True):
                outputs[todo[k]] = out
        per_item_s = (time.perf_counter() - started) / max(1, len(items))
        results: list[Caption | StageError] = []
        for clip, out, given in zip(items, outputs, rendered, strict=True):
            if isinstance(out, StageError):
                results.append(out)
            else:
                results.append(
                    Caption(
                        clip.ref,
                        out.text,
                        out.prompt_tokens,
                        len(out.token_ids),
                        per_item_s,
                        context=given.context,
                        context_tokens=given.context_tokens,
                        context_cut_tokens=given.cut_tokens,
                    )
                )
        return results

    def _prompt_length(self, request: GenRequest) -> int:
        """Prompt tokens of a request as generate will see them (placeholders expanded)."""
        family = self.family
        try:
            text = family.request_text(request)  # type: ignore[attr-defined]
        except Exception:  # noqa: BLE001 - no chat prompt (captioners) or bad input: the
            # length only orders the batches, and generate reports bad input itself
            text = request.prompt
        return family.count_tokens(text)

    def stream(
        self, item: EncodedClip, settings: GenerationConfig, on_text: Callable[[str], None]
    ) -> Caption | StageError:
        """Generate for one item, calling ``on_text`` with each new piece of text."""
        streamer = CallbackStreamer(self.family.tokenizer, on_text)
        return self([item], settings=settings, streamer=streamer)[0]


class CallbackStreamer(TextStreamer):
    """Hands decoded text to a callback as soon as it forms whole characters/words."""

    def __init__(self, tokenizer, on_text: Callable[[str], None]) -> None:
        super().__init__(tokenizer, skip_prompt=True, skip_special_tokens=True)
        self.on_text = on_text

    def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
        if text:
            self.on_text(text)
