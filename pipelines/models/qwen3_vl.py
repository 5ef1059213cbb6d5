"""Qwen3-VL: native video input, timestamped frame groups, deepstack features.

What crosses the stage boundary per clip:
- ``video_embeds``: (tokens, hidden) merged visual tokens from the tower's last layer;
- ``deepstack_embeds``: (deepstack layers, tokens, hidden) — the tower's intermediate
  layers (``deepstack_visual_indexes``), merged the same way; the LM adds layer k's rows
  to the visual tokens' hidden states after its decoder layer k, so they must
  cross the boundary too (dropping them changes the output; a test pins this down);
- ``video_grid_thw``: (3,) int64 temporal/height/width patch grid, for M-RoPE and to split
  the rows into frame groups;
- ``frame_ts_s``: (frames,) float64 seconds of each frame from the clip start, for the
  "<t seconds>" stamp the processor writes before each frame group.
Tiny model (two deepstack layers, width 64, float32): 4 frames at 112 px give 2 groups of
16 tokens, (32, 64) + (2, 32, 64) = 24,576 bytes plus 56 bytes of grid and times (24,928
serialized); released checkpoints (three deepstack layers) ship 4x the bf16 size of their
video tokens.

The LM half writes the same text the processor writes in place of ``<|video_pad|>`` (its
own ``replace_video_token``, fed the grid and the frame times) and hands rows and deepstack
features to ``generate`` as precomputed encoder outputs; see ``placeholder`` for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from pipelines.models import register
from pipelines.models.base import FamilyDoc, FramesInput, GenRequest
from pipelines.models.qwen2_vl import (
    QWEN_CHAT_TEMPLATE,
    QwenVL,
    mrope_section,
    qwen_tokenizer,
    qwen_vl_config,
)
from pipelines.models.tiny import sharpen_and_save, tiny_text_config, token_ids


@register
class Qwen3VL(QwenVL):
    model_type = "qwen3_vl"
    docs = (
        FamilyDoc(
            "Qwen3-VL",
            "`Qwen/Qwen3-VL-2B-Instruct`, `Qwen/Qwen3-VL-8B-Instruct`",
            "native video tokens with timestamps, deepstack features",
            "`video_embeds` (32×64) + `deepstack_embeds` (2×32×64) + grid, times: 24.9 KB",
        ),
    )

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
        """Timestamped frame groups, and deepstack features from the first vision layers
        added after the first LM layers (one per layer, as many as both have)."""
        from transformers import (
            Qwen2VLImageProcessor,
            Qwen3VLConfig,
            Qwen3VLForConditionalGeneration,
            Qwen3VLProcessor,
            Qwen3VLVideoProcessor,
        )

        tokenizer = qwen_tokenizer()
        heads = max(2, hidden_size // 32)
        head_dim = hidden_size // heads
        patch = 16
        text = dict(
            **tiny_text_config(tokenizer, hidden_size, num_layers),
            head_dim=head_dim,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": mrope_section(head_dim),
                "mrope_interleaved": True,
            },
        )
        vision = dict(
            depth=vision_depth,
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            num_heads=2,
            patch_size=patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=hidden_size,
            num_position_embeddings=64,  # an 8x8 learned grid, interpolated per frame size
            deepstack_visual_indexes=list(range(min(vision_depth, num_layers))),
        )
        config = qwen_vl_config(Qwen3VLConfig, tokenizer, text, vision, tie_word_embeddings=False)
        torch.manual_seed(seed)
        model = Qwen3VLForConditionalGeneration(config).eval()
        # Small pixel budgets keep the tiny model fast on CPU; real checkpoints ship their own.
        factor = patch * 2
        size = {"shortest_edge": factor * factor * 4, "longest_edge": factor * factor * 64}
        processor = Qwen3VLProcessor(
            image_processor=Qwen2VLImageProcessor(patch_size=patch, merge_size=2, size=size),
            video_processor=Qwen3VLVideoProcessor(
                patch_size=patch, size=size, cap_pixels_per_frame=True
            ),
            tokenizer=tokenizer,
            chat_template=QWEN_CHAT_TEMPLATE,
        )
        ids = token_ids(tokenizer, ("<|im_end|>", "<|endoftext|>"))
        return sharpen_and_save(
            model, processor, out_dir, eos_id=ids["<|im_end|>"], pad_id=ids["<|endoftext|>"]
        )

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        grid, out = self.video_features(clips)
        # deepstack_features: per deepstack layer, a tuple of per-clip rows.
        deepstack = list(zip(*out.deepstack_features, strict=True))
        return [
            {
                "video_embeds": embeds.cpu(),
                "deepstack_embeds": torch.stack(layers).cpu(),
                "video_grid_thw": thw.clone(),
                "frame_ts_s": torch.arange(len(clip.frames), dtype=torch.float64)
                / clip.sampled_fps,
            }
            for clip, embeds, layers, thw in zip(
                clips, out.pooler_output, deepstack, grid, strict=True
            )
        ]

    def video_text(self, grid_thw: torch.Tensor, frame_ts_s: list[float]) -> str:
        """What the processor writes in place of ``<|video_pad|>`` for this clip."""
        # The processor stamps frame group g with the mean of its frames' index / fps
        # (padding odd counts with the last frame); at fps=1, indices are the times.
        from transformers.video_utils import VideoMetadata

        meta = VideoMetadata(total_num_frames=len(frame_ts_s), fps=1.0, frames_indices=frame_ts_s)
        inputs = {"video_grid_thw": grid_thw[None], "video_metadata": [meta]}
        return self.processor.replace_video_token(inputs, video_idx=0)

    def request_text(self, request: GenRequest) -> str:
        enc = request.encoded
        messages = self.chat_messages(request, [{"type": "video"}])
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        video = self.video_text(enc["video_grid_thw"], enc["frame_ts_s"].tolist())
        return text.replace(self.video_token, video, 1)

    def visual_inputs(self, requests: Sequence[GenRequest]) -> dict:
        def rows(key):
            return tuple(r.encoded[key].to(self.device, self.dtype) for r in requests)

        deepstack = rows("deepstack_embeds")  # per request: (layers, tokens, hidden)
        from transformers.models.qwen3_vl.modeling_qwen3_vl import (
            BaseModelOutputWithDeepstackFeatures,
        )

        out = BaseModelOutputWithDeepstackFeatures(
            pooler_output=rows("video_embeds"),
            deepstack_features=[tuple(d[k] for d in deepstack) for k in range(len(deepstack[0]))],
        )
        grid = torch.stack([r.encoded["video_grid_thw"] for r in requests])
        return {"video_grid_thw": grid.to(self.device), "mm_encoder_outputs": {"video": out}}
