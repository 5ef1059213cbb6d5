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
from typing import ClassVar

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pipelines.models import register
from pipelines.models.base import FramesInput, GenRequest
from pipelines.models.placeholder import PlaceholderFamily


@register
class LlavaOnevision(PlaceholderFamily):
    model_types = ("llava_onevision",)
    vision_modules = ("vision_tower", "multi_modal_projector", "image_newline")
    supports_chat = True
    # The video embedding ends with one shared row after the per-frame tokens.
    trailing_rows: ClassVar[int] = 1

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        vp = self.processor.video_processor
        # One processor call per clip (clips may differ in size), one tower call for all.
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
