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

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pipelines.models import register
from pipelines.models.base import FramesInput, GenRequest, SamplingHints
from pipelines.models.placeholder import PlaceholderFamily


@register
class QwenVL(PlaceholderFamily):
    model_types = ("qwen2_vl", "qwen2_5_vl")
    vision_modules = ("visual",)
    supports_chat = True
    # Frames are grouped in pairs per temporal patch; qwen-vl-utils samples at least 4.
    hints = SamplingHints(min_frames=4, frame_factor=2)

    def _load(self):
        model = super()._load()
        self.uses_grid_seconds = "second_per_grid_ts" in self.processor.model_input_names
        return model

    def video_features(self, clips: Sequence[FramesInput]):
        """(patch grid per clip, the vision tower's output) for a batch of clips."""
        vp = self.processor.video_processor
        batch = vp(videos=[c.frames for c in clips], return_tensors="pt", do_sample_frames=False)
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
