"""A text-only chat model for the summary step (``SummaryConfig.model``).

Summaries read text, not frames, so they may use a stronger text LLM than the captioning
VLM — any ``AutoModelForCausalLM`` checkpoint whose tokenizer has a chat template (Qwen2.5,
Llama 3, Mistral instruct models, ...). ``load_summary_lm`` picks this class when the model
is not a registered video family.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from pipelines.core.config import ModelConfig
from pipelines.models.base import pick_device, pick_dtype
from pipelines.models.chat import ChatGeneration


class TextLM(ChatGeneration):
    supports_chat = True
    add_special_tokens = False  # the chat template writes them

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)

    @property
    def chat_template_owner(self):
        return self._tokenizer

    @property
    def tokenizer(self):
        return self._tokenizer

    def load_lm(self) -> None:
        cfg = self.config
        self._tokenizer = AutoTokenizer.from_pretrained(cfg.model, revision=cfg.revision)
        if not self._tokenizer.chat_template:
            raise ValueError(f"{cfg.model} has no chat template: it cannot write summaries")
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(
            cfg.model, revision=cfg.revision, dtype=self.dtype
        )
        self.lm = model.to(self.device).eval()
        self.max_positions = model.config.max_position_embeddings


def load_summary_lm(config: ModelConfig):
    """The chat model that writes summaries: a registered chat VLM family's LM half, or a
    plain text chat model. Nothing is loaded yet (call ``load_lm``)."""
    from pipelines.models import family_for_model_type

    model_type = AutoConfig.from_pretrained(config.model, revision=config.revision).model_type
    try:
        family_cls = family_for_model_type(model_type)
    except ValueError:
        return TextLM(config)
    if not family_cls.supports_chat:
        raise ValueError(f"{model_type} has no chat template: it cannot write summaries")
    return family_cls(config)


def build_tiny_text_lm(
    out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0
) -> Path:
    """A tiny text-only chat model (Qwen2 causal LM, ChatML template): a summary model."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from pipelines.models.qwen2_vl import QWEN_CHAT_TEMPLATE, qwen_tokenizer
    from pipelines.models.tiny import sharpen_and_save, tiny_text_config

    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen2Config(
        **tiny_text_config(tokenizer, hidden_size, num_layers),
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    return sharpen_and_save(model, tokenizer, out_dir, eos_id=eos, pad_id=pad)
