"""LLaVA-OneVision: native video tokens, 2x2-pooled per frame, one newline token per video.

What crosses the stage boundary per clip:
- ``video_embeds``: (frames * pooled_tokens + 1, hidden) projected visual tokens — the
  SigLIP tower's last layer, projected into the LM's space, bilinearly pooled 2x2 per
  frame, followed by the model's ``image_newline`` row. Tiny model: 4 frames at 56 px give
  (4 * 2 * 2 + 1, 64) float32 = 4,352 bytes per clip (4,432 serialized); a real 0.5B
  checkpoint at 384 px gives 196 tokens per frame plus one, 896 wide (bf16: ~351 KB per
  frame).
The LM half expands the chat prompt's ``<video>`` placeholder to one token per row, exactly
as the fused processor does, and hands the rows to ``generate`` as precomputed encoder
outputs, so the vision tower never runs (nor is loaded) there.

The encoder runs the tower on every frame of every clip in one batch (each frame as a
one-frame video, which the tower, projector and pooling treat independently) and then
reassembles each clip's rows, so clips of different lengths share one forward pass."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pipelines.models import register
from pipelines.models.base import FamilyDoc, FramesInput, GenRequest, rejected_inputs
from pipelines.models.placeholder import PlaceholderFamily
from pipelines.models.tiny import (
    build_bpe_tokenizer,
    sharpen_and_save,
    tiny_text_config,
    token_ids,
)

# The tiny model's LM is Qwen2: ChatML turns, <video>/<image> placeholders before the text.
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'video' %}<video>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@register
class LlavaOnevision(PlaceholderFamily):
    model_type = "llava_onevision"
    docs = (
        FamilyDoc(
            "LLaVA-OneVision",
            "`llava-hf/llava-onevision-qwen2-0.5b-ov-hf`, `…-7b-ov-hf`",
            "native video tokens, 2×2 pooled per frame + newline row",
            "`video_embeds` (17×64): 4.4 KB",
        ),
    )
    vision_modules = ("vision_tower", "multi_modal_projector", "image_newline")
    supports_chat = True
    # The video embedding ends with one shared row after the per-frame tokens.
    trailing_rows: ClassVar[int] = 1

    @classmethod
    def build_tiny(
        cls,
        out_dir: str | Path,
        *,
        hidden_size: int = 64,
        num_layers: int = 2,
        vision_dim: int = 32,
        vision_depth: int = 2,
        image_size: int = 56,
        seed: int = 0,
    ) -> Path:
        """SigLIP tower, 2x2-pooled video tokens, Qwen2 LM."""
        from transformers import (
            LlavaOnevisionConfig,
            LlavaOnevisionForConditionalGeneration,
            LlavaOnevisionImageProcessor,
            LlavaOnevisionProcessor,
            LlavaOnevisionVideoProcessor,
        )

        tokenizer = build_bpe_tokenizer(
            SPECIAL_TOKENS,
            eos="<|im_end|>",
            pad="<|endoftext|>",
            named={"image_token": "<image>", "video_token": "<video>"},
        )
        ids = token_ids(tokenizer, SPECIAL_TOKENS)
        patch = 14
        # A few any-res tiles at this size keep the (unused here) image path loadable.
        pinpoints = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
        config = LlavaOnevisionConfig(
            text_config=dict(
                model_type="qwen2",
                **tiny_text_config(tokenizer, hidden_size, num_layers),
                bos_token_id=ids["<|endoftext|>"],
                eos_token_id=ids["<|im_end|>"],
                pad_token_id=ids["<|endoftext|>"],
            ),
            vision_config=dict(
                model_type="siglip_vision_model",
                hidden_size=vision_dim,
                intermediate_size=vision_dim * 2,
                num_hidden_layers=vision_depth,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=patch,
                vision_use_head=False,
            ),
            image_token_index=ids["<image>"],
            video_token_index=ids["<video>"],
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
            image_grid_pinpoints=pinpoints,
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        model = LlavaOnevisionForConditionalGeneration(config).eval()
        size = {"height": image_size, "width": image_size}
        processor = LlavaOnevisionProcessor(
            image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
            video_processor=LlavaOnevisionVideoProcessor(size=size),
            tokenizer=tokenizer,
            num_image_tokens=(image_size // patch) ** 2,
            vision_feature_select_strategy="full",
            chat_template=CHAT_TEMPLATE,
        )
        return sharpen_and_save(
            model, processor, out_dir, eos_id=ids["<|im_end|>"], pad_id=ids["<|endoftext|>"]
        )

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        vp = self.processor.video_processor
        # One processor call per clip (clips may differ in size), one tower call for all.
        with rejected_inputs("video processor"):
            pixels = [
                vp(videos=[c.frames], return_tensors="pt", do_sample_frames=False)[
                    "pixel_values_videos"
                ][0]
                for c in clips
            ]
        frames = torch.cat(pixels).unsqueeze(1)  # (all frames, 1, C, H, W)
        out = self.visual_model.get_video_features(
            pixel_values_videos=frames.to(self.device, self.dtype), return_dict=True
        )
        rows = out.pooler_output  # (all frames, tokens per frame + trailing, hidden)
        per_frame = rows[:, : rows.shape[1] - self.trailing_rows]
        trailing = rows[0, per_frame.shape[1] :]
        results, start = [], 0
        for p in pixels:
            clip_rows = per_frame[start : start + len(p)].flatten(0, 1)
            start += len(p)
            results.append({"video_embeds": torch.cat([clip_rows, trailing]).cpu()})
        return results

    def request_text(self, request: GenRequest) -> str:
        messages = self.chat_messages(request, [{"type": "video"}])
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        rows = request.encoded["video_embeds"].shape[0]
        return text.replace(self.video_token, self.video_token * rows, 1)

    def visual_inputs(self, requests: Sequence[GenRequest]) -> dict:
        # masked_scatter fills placeholders in row-major order, so the rows of all
        # requests go in one (1, total rows, hidden) tensor, in batch order.
        rows = torch.cat([r.encoded["video_embeds"] for r in requests])
        pooled = BaseModelOutputWithPooling(pooler_output=rows[None].to(self.device, self.dtype))
        return {"mm_encoder_outputs": {"video": pooled}}
