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

import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import BaseModelOutputWithDeepstackFeatures
from transformers.video_utils import VideoMetadata

from pipelines.models import register
from pipelines.models.base import FramesInput, GenRequest
from pipelines.models.qwen2_vl import QwenVL


@register
class Qwen3VL(QwenVL):
    model_types = ("qwen3_vl",)

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
        out = BaseModelOutputWithDeepstackFeatures(
            pooler_output=rows("video_embeds"),
            deepstack_features=[tuple(d[k] for d in deepstack) for k in range(len(deepstack[0]))],
        )
        grid = torch.stack([r.encoded["video_grid_thw"] for r in requests])
        return {"video_grid_thw": grid.to(self.device), "mm_encoder_outputs": {"video": out}}
