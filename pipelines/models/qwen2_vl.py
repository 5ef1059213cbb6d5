"""Qwen2-VL and Qwen2.5-VL: native video input, M-RoPE positions from the video grid.

What crosses the stage boundary per clip:
- ``video_embeds``: (tokens, hidden) merged visual tokens, the vision tower's projector output;
- ``video_grid_thw``: (3,) int64 temporal/height/width patch grid, needed for M-RoPE;
- ``second_per_grid_ts``: (1,) seconds per temporal patch (Qwen2.5-VL only, for its
  absolute-time M-RoPE).
Tiny model: 4 frames at 112 px give (32, 64) float32 = 8,192 bytes per clip; Qwen2-VL-2B at
448x252 px and 2 fps gives 144 tokens per frame pair, 1536 wide (bf16: ~442 KB per pair).
The LM half expands the single video placeholder of the chat prompt to one token per
embedding row, exactly as the fused processor does; see ``placeholder`` for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pipelines.models import register
from pipelines.models.base import FamilyDoc, FramesInput, GenRequest, SamplingHints, rejected_inputs
from pipelines.models.placeholder import PlaceholderFamily
from pipelines.models.tiny import build_bpe_tokenizer, sharpen_and_save, token_ids

# Qwen2-VL's special tokens; their ids are 0..6 in the tiny vocabulary.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen2-VL chat format: system turn by default, vision placeholders in user turns.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Small pixel budgets keep the tiny models fast on CPU; real checkpoints ship their own.
TINY_PIXELS = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)


def qwen_tokenizer():
    """The tiny Qwen tokenizer: ChatML ends, vision placeholders named as the hub's are."""
    return build_bpe_tokenizer(
        QWEN_SPECIAL_TOKENS,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        named={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )


def mrope_section(head_dim: int) -> list[int]:
    """M-RoPE splits each head's rotary half into (temporal, height, width) sections."""
    half = head_dim // 2
    return [half - 2 * (half // 3), half // 3, half // 3]


def qwen_vl_config(config_cls, tokenizer, text: dict, vision: dict, **extra):
    """A Qwen-VL config around a tiny Qwen tokenizer: its special ids wherever one is named."""
    ids = token_ids(tokenizer, QWEN_SPECIAL_TOKENS)
    return config_cls(
        text_config={
            "vocab_size": len(tokenizer),
            **text,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": ids["<|endoftext|>"],
        },
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        **extra,
    )


def qwen_vl_processor(processor_cls, tokenizer, *, image_pixels: dict, video_pixels: dict):
    """A Qwen2-VL-style processor with the given pixel budgets and the ChatML template."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    return processor_cls(
        image_processor=Qwen2VLImageProcessor(**image_pixels),
        video_processor=Qwen2VLVideoProcessor(**video_pixels),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )


@register
class QwenVL(PlaceholderFamily):
    model_type = "qwen2_vl"
    docs = (
        FamilyDoc(
            "Qwen2-VL",
            "`Qwen/Qwen2-VL-2B-Instruct`, `Qwen/Qwen2-VL-7B-Instruct`",
            "native video tokens, M-RoPE",
            "`video_embeds` (32×64) + `video_grid_thw`: 8.2 KB",
        ),
    )
    vision_modules = ("visual",)
    supports_chat = True
    # Frames are grouped in pairs per temporal patch; qwen-vl-utils samples at least 4.
    hints = SamplingHints(min_frames=4, frame_factor=2)

    @classmethod
    def tiny_model_classes(cls) -> tuple:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

        return Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    @classmethod
    def tiny_vision_config(cls, hidden_size: int, vision_dim: int, vision_depth: int) -> dict:
        return dict(embed_dim=vision_dim, hidden_size=hidden_size, mlp_ratio=2)

    @classmethod
    def build_tiny(
        cls,
        out_dir: str | Path,
        *,
        hidden_size: int = 64,
        num_layers: int = 2,
        vision_dim: int = 32,
        vision_depth: int = 2,
        seed: int = 0,
    ) -> Path:
        config_cls, model_cls, processor_cls = cls.tiny_model_classes()
        tokenizer = qwen_tokenizer()
        heads = max(2, hidden_size // 32)
        text = dict(
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=max(1, heads // 2),
            max_position_embeddings=4096,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": mrope_section(hidden_size // heads),
            },
        )
        vision = dict(
            depth=vision_depth,
            num_heads=2,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            **cls.tiny_vision_config(hidden_size, vision_dim, vision_depth),
        )
        config = qwen_vl_config(config_cls, tokenizer, text, vision)
        torch.manual_seed(seed)
        model = model_cls(config).eval()
        processor = qwen_vl_processor(
            processor_cls, tokenizer, image_pixels=TINY_PIXELS, video_pixels=TINY_PIXELS
        )
        ids = token_ids(tokenizer, ("<|im_end|>", "<|endoftext|>"))
        return sharpen_and_save(
            model, processor, out_dir, eos_id=ids["<|im_end|>"], pad_id=ids["<|endoftext|>"]
        )

    def _load(self, removed: Sequence[str]):
        model = super()._load(removed)
        self.uses_grid_seconds = "second_per_grid_ts" in self.processor.model_input_names
        return model

    def video_features(self, clips: Sequence[FramesInput]):
        """(patch grid per clip, the vision tower's output) for a batch of clips."""
        vp = self.processor.video_processor
        with rejected_inputs("video processor"):
            batch = vp(
                videos=[c.frames for c in clips], return_tensors="pt", do_sample_frames=False
            )
        grid = batch["video_grid_thw"]
        out = self.visual_model.get_video_features(
            pixel_values_videos=batch["pixel_values_videos"].to(self.device, self.dtype),
            video_grid_thw=grid.to(self.device),
            return_dict=True,
        )
        return grid, out

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        vp = self.processor.video_processor
        grid, out = self.video_features(clips)
        results = []
        for clip, embeds, thw in zip(clips, out.pooler_output, grid, strict=True):
            item = {"video_embeds": embeds.cpu(), "video_grid_thw": thw.clone()}
            if self.uses_grid_seconds:
                seconds = vp.temporal_patch_size / clip.sampled_fps
                item["second_per_grid_ts"] = torch.tensor([seconds], dtype=torch.float32)
            results.append(item)
        return results

    def request_text(self, request: GenRequest) -> str:
        messages = self.chat_messages(request, [{"type": "video"}])
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        rows = request.encoded["video_embeds"].shape[0]
        return text.replace(self.video_token, self.video_token * rows, 1)

    def text_kwargs(self, texts: list[str]) -> dict:
        kwargs = super().text_kwargs(texts)
        # M-RoPE needs to know which tokens are video, and each video's patch grid.
        ids = kwargs["input_ids"].tolist()
        kwargs["mm_token_type_ids"] = torch.tensor(
            self.processor.create_mm_token_type_ids(ids), device=self.device
        )
        return kwargs

    def visual_inputs(self, requests: Sequence[GenRequest]) -> dict:
        embeds = tuple(r.encoded["video_embeds"].to(self.device, self.dtype) for r in requests)
        inputs = {
            "video_grid_thw": torch.stack([r.encoded["video_grid_thw"] for r in requests]).to(
                self.device
            ),
            "mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=embeds)},
        }
        if self.uses_grid_seconds:
            inputs["second_per_grid_ts"] = torch.cat(
                [r.encoded["second_per_grid_ts"] for r in requests]
            ).to(self.device)
        return inputs


@register
class Qwen25VL(QwenVL):
    """Qwen2.5-VL: Qwen2-VL's adapter; a windowed vision tower, absolute-time M-RoPE."""

    model_type = "qwen2_5_vl"
    docs = (
        FamilyDoc(
            "Qwen2.5-VL",
            "`Qwen/Qwen2.5-VL-3B-Instruct`, `Qwen/Qwen2.5-VL-7B-Instruct`",
            "native video tokens, absolute-time M-RoPE",
            "same + `second_per_grid_ts`",
        ),
    )

    @classmethod
    def tiny_model_classes(cls) -> tuple:
        from transformers import (
            Qwen2_5_VLConfig,
            Qwen2_5_VLForConditionalGeneration,
            Qwen2_5_VLProcessor,
        )

        return Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor

    @classmethod
    def tiny_vision_config(cls, hidden_size: int, vision_dim: int, vision_depth: int) -> dict:
        return dict(
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            out_hidden_size=hidden_size,
            window_size=56,
            fullatt_block_indexes=[vision_depth - 1],
        )
