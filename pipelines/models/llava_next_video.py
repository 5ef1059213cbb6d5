"""LLaVA-NeXT-Video: native video tokens, each frame's CLIP patches average-pooled 2x2.

What crosses the stage boundary per clip:
- ``video_embeds``: (frames * pooled_tokens, hidden) projected visual tokens — the CLIP
  tower's second-to-last layer without its CLS token, average-pooled 2x2 per frame, then
  projected into the LM's space. Tiny model: 4 frames at 56 px give (4 * 2 * 2, 64) float32
  = 4,096 bytes per clip (4,176 serialized); a real 7B checkpoint at 336 px gives 144
  tokens per frame, 4096 wide (bf16: ~1.2 MB per frame).
The LM half expands ``<video>`` to one token per row and passes the rows to ``generate``
as precomputed encoder outputs; see ``llava_onevision`` for the shared mechanics (the two
families differ only in tower, pooling and the absence of a trailing newline row).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pipelines.models import register
from pipelines.models.base import FamilyDoc
from pipelines.models.llava_onevision import LlavaOnevision
from pipelines.models.tiny import (
    build_bpe_tokenizer,
    sharpen_and_save,
    tiny_text_config,
    token_ids,
)

# The tiny model's LM is Vicuna/Llama: "USER: <video>\n{text} ASSISTANT:", BOS prepended.
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<video>", "<image>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'video' %}<video>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


@register
class LlavaNextVideo(LlavaOnevision):
    model_type = "llava_next_video"
    docs = (
        FamilyDoc(
            "LLaVA-NeXT-Video",
            "`llava-hf/LLaVA-NeXT-Video-7B-hf`",
            "native video tokens, 2×2 average-pooled CLIP patches",
            "`video_embeds` (16×64): 4.2 KB",
        ),
    )
    # image_newline serves images only; it stays with the encoder half's weights.
    vision_modules = ("vision_tower", "vision_resampler", "multi_modal_projector", "image_newline")
    trailing_rows = 0

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
        """CLIP tower, 2x2 average-pooled frames, Llama LM."""
        from transformers import (
            LlavaNextImageProcessor,
            LlavaNextVideoConfig,
            LlavaNextVideoForConditionalGeneration,
            LlavaNextVideoProcessor,
            LlavaNextVideoVideoProcessor,
        )

        tokenizer = build_bpe_tokenizer(
            SPECIAL_TOKENS,
            bos="<s>",
            prepend_bos=True,
            eos="</s>",
            pad="<unk>",
            named={"image_token": "<image>", "video_token": "<video>"},
        )
        ids = token_ids(tokenizer, SPECIAL_TOKENS)
        patch = 14
        pinpoints = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
        tokens_per_frame = (image_size // patch) ** 2
        config = LlavaNextVideoConfig(
            text_config=dict(
                model_type="llama",
                **tiny_text_config(tokenizer, hidden_size, num_layers),
                bos_token_id=ids["<s>"],
                eos_token_id=ids["</s>"],
                pad_token_id=ids["<unk>"],
            ),
            vision_config=dict(
                model_type="clip_vision_model",
                hidden_size=vision_dim,
                intermediate_size=vision_dim * 2,
                num_hidden_layers=vision_depth,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=patch,
                projection_dim=vision_dim,
            ),
            image_token_index=ids["<image>"],
            video_token_index=ids["<video>"],
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
            image_grid_pinpoints=pinpoints,
            image_seq_length=tokens_per_frame,
            video_seq_length=tokens_per_frame // 4,
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        model = LlavaNextVideoForConditionalGeneration(config).eval()
        crop = {"height": image_size, "width": image_size}
        processor = LlavaNextVideoProcessor(
            video_processor=LlavaNextVideoVideoProcessor(
                size={"shortest_edge": image_size}, crop_size=crop
            ),
            image_processor=LlavaNextImageProcessor(
                size={"shortest_edge": image_size}, crop_size=crop, image_grid_pinpoints=pinpoints
            ),
            tokenizer=tokenizer,
            patch_size=patch,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,  # CLIP's CLS token
            chat_template=CHAT_TEMPLATE,
        )
        return sharpen_and_save(model, processor, out_dir, eos_id=ids["</s>"], pad_id=ids["<unk>"])
