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

from pipelines.models import register
from pipelines.models.llava_onevision import LlavaOnevision


@register
class LlavaNextVideo(LlavaOnevision):
    model_types = ("llava_next_video",)
    # image_newline serves images only; it stays with the encoder half's weights.
    vision_modules = ("vision_tower", "vision_resampler", "multi_modal_projector", "image_newline")
    trailing_rows = 0
