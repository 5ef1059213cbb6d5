"""Generation shared by every model with a chat LM: length checks, text-only chat turns,
batched left-padded ``generate`` and decoding of the new tokens.

Used by the chat VLM families (through ``PlaceholderFamily``) and by ``TextLM``, a plain
text chat model for the summary step. A user needs ``lm``, ``tokenizer``, ``device``,
``max_positions``, ``supports_chat`` and ``chat_template_owner`` (the processor or
tokenizer whose chat template formats a conversation).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch

from pipelines.core.config import GenerationConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.models.base import GenOutput, decoding_kwargs, stop_ids, until_stop


class ChatGeneration:
    lm: torch.nn.Module
    device: torch.device
    max_positions: int
    supports_chat: bool
    # False when the chat template itself writes BOS (text LMs such as Llama 3), so that
    # tokenizing the formatted prompt does not add a second one.
    add_special_tokens: ClassVar[bool] = True

    @property
    def chat_template_owner(self):
        return self.processor

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=self.add_special_tokens)["input_ids"])

    def text_kwargs(self, texts: list[str]) -> dict:
        enc = self.tokenizer(
            texts,
            return_tensors="pt",
            padding=True,
            padding_side="left",
            add_special_tokens=self.add_special_tokens,
        )
        return {
            "input_ids": enc["input_ids"].to(self.device),
            "attention_mask": enc["attention_mask"].to(self.device),
        }

    def _check_length(self, text: str, settings: GenerationConfig) -> StageError | None:
        length = self.count_tokens(text)
        if length + settings.max_new_tokens <= self.max_positions:
            return None
        return StageError(
            ErrorCode.PROMPT_TOO_LONG,
            f"{length} prompt tokens + max_new_tokens={settings.max_new_tokens} exceed "
            f"the model's {self.max_positions} positions; shorten clip_s, lower fps "
            "or num_frames",
            "generate",
        )

    def text_prompt(self, prompt: str) -> str:
        messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        return self.chat_template_owner.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )

    @torch.inference_mode()
    def generate_text(
        self, prompts: Sequence[str], settings: GenerationConfig
    ) -> list[GenOutput | StageError]:
        if not self.supports_chat:
            raise NotImplementedError(f"{type(self).__name__} cannot generate from text alone")
        texts = [self.text_prompt(p) for p in prompts]
        results: list[GenOutput | StageError | None] = [
            self._check_length(t, settings) for t in texts
        ]
        keep = [i for i, r in enumerate(results) if r is None]
        if keep:
            kwargs = self.text_kwargs([texts[i] for i in keep])
            for i, out in zip(keep, self._generate(kwargs, settings), strict=True):
                results[i] = out
        return results  # type: ignore[return-value]

    def _generate(self, kwargs: dict, settings: GenerationConfig, streamer=None) -> list[GenOutput]:
        tok = self.tokenizer
        out = self.lm.generate(
            **kwargs, **decoding_kwargs(settings), pad_token_id=tok.pad_token_id, streamer=streamer
        )
        new = out[:, kwargs["input_ids"].shape[1] :].cpu()
        prompt_lens = kwargs["attention_mask"].sum(dim=1).tolist()
        stop = stop_ids(self.lm.generation_config, tok.pad_token_id)
        results = []
        for row, prompt_len in zip(new.tolist(), prompt_lens, strict=True):
            tokens = until_stop(row, stop)
            text = tok.decode(tokens, skip_special_tokens=True)
            results.append(GenOutput(text=text, token_ids=tuple(tokens), prompt_tokens=prompt_len))
        return results
