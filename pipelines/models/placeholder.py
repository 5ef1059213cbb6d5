"""Shared half of every "visual rows fill placeholder tokens" chat family.

Qwen-VL, LLaVA-OneVision, LLaVA-NeXT-Video and SmolVLM all work the same way once the
vision tower has run: the chat prompt's visual placeholder is expanded to one token per
row of the encoder output, and the rows reach ``generate`` as precomputed encoder outputs
(``mm_encoder_outputs``), so the LM half never loads or runs the tower. BLIP-2 and
IDEFICS reuse the loading and decoding here but hand their rows over their own way
(``visual_inputs``/``generate_kwargs``). This base holds
loading (each half is built without the other's submodules, see ``halves``), prompt checks,
batched left-padded generation and decoding; a family supplies ``encode``, ``request_text`` and
``visual_inputs``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import ClassVar

import torch
import transformers

from pipelines.core.config import GenerationConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.models.base import GenOutput, GenRequest, VideoLMFamily
from pipelines.models.chat import ChatGeneration
from pipelines.models.halves import Split, load_without, model_class


class PlaceholderFamily(ChatGeneration, VideoLMFamily):
    """A chat VLM whose precomputed visual rows replace placeholder tokens in the prompt."""

    # Submodules of ``model.model`` that only the encoder half uses, and the LM's own.
    vision_modules: ClassVar[tuple[str, ...]]
    language_module: ClassVar[str] = "language_model"

    @classmethod
    def split(cls) -> Split:
        """The halves as paths in the loaded model (``lm_head`` goes with the LM)."""
        return Split(
            encoder=tuple(f"model.{name}" for name in cls.vision_modules),
            lm=(f"model.{cls.language_module}", "lm_head"),
        )

    def _load(self, removed: Sequence[str]):
        """Processor, and the model without the ``removed`` submodules (never loaded)."""
        cfg = self.config
        self.processor = transformers.AutoProcessor.from_pretrained(
            cfg.model, revision=cfg.revision
        )
        self.video_token = self.processor.video_token
        # Read once: it picks the class and is handed to from_pretrained.
        config = transformers.AutoConfig.from_pretrained(cfg.model, revision=cfg.revision)
        model_cls = model_class(transformers.MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING, config)
        return load_without(
            model_cls, cfg.model, removed, config=config, revision=cfg.revision, dtype=self.dtype
        )

    def load_encoder(self) -> None:
        model = self._load(self.split().lm)
        self.visual_model = model.model.to(self.device)  # holds no language model

    def load_lm(self) -> None:
        model = self._load(self.split().encoder)
        self.lm = model.to(self.device)
        self.max_positions = model.config.text_config.max_position_embeddings

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @abc.abstractmethod
    def request_text(self, request: GenRequest) -> str:
        """The full prompt text, placeholders already expanded to one token per row."""

    @abc.abstractmethod
    def visual_inputs(self, requests: Sequence[GenRequest]) -> dict:
        """``mm_encoder_outputs`` (and any side inputs) for a batch, in batch order."""

    def chat_messages(self, request: GenRequest, visual: Sequence[dict]) -> list[dict]:
        """The conversation: earlier turns, then the prompt; ``visual`` opens the first turn."""
        messages = []
        for user, assistant in request.history:
            messages.append({"role": "user", "content": [{"type": "text", "text": user}]})
            messages.append({"role": "assistant", "content": [{"type": "text", "text": assistant}]})
        messages.append({"role": "user", "content": [{"type": "text", "text": request.prompt}]})
        messages[0]["content"] = [*visual, *messages[0]["content"]]
        return messages

    def generate_kwargs(self, requests: Sequence[GenRequest], texts: list[str]) -> dict:
        """Inputs of ``self.lm`` (forward or generate) for a batch of prompt texts."""
        return {**self.text_kwargs(texts), **self.visual_inputs(requests)}

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenRequest], settings: GenerationConfig, streamer=None
    ) -> list[GenOutput | StageError]:
        results: list[GenOutput | StageError | None] = [None] * len(requests)
        texts, keep = [], []
        for i, req in enumerate(requests):
            written = [req.prompt, *(t for turn in req.history for t in turn)]
            if any(self.video_token in t for t in written):
                results[i] = StageError(
                    ErrorCode.MODEL_ERROR, "prompt contains the video placeholder token", "generate"
                )
                continue
            text = self.request_text(req)
            if error := self._check_length(text, settings):
                results[i] = error
                continue
            texts.append(text)
            keep.append(i)
        if keep:
            kwargs = self.generate_kwargs([requests[i] for i in keep], texts)
            outs = self._generate(kwargs, settings, streamer)
            for i, out in zip(keep, outs, strict=True):
                results[i] = out
        return results  # type: ignore[return-value]
