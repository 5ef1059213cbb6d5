"""SmolVLM2: video frames as images, each behind a "Frame from MM:SS:" timestamp line.

What crosses the stage boundary per clip:
- ``image_embeds``: (frames * image_seq_len, hidden) — each frame squared to the
  processor's ``max_image_size``, through the SigLIP-style tower, pixel-shuffled by the
  connector and projected into the LM's space;
- ``frame_ts_s``: (frames,) float64 seconds of each frame from the clip start, written
  into the prompt as the processor does;
- ``duration_s``: (1,) float64 clip length (frames / sampled fps), for the prompt's intro.
Tiny model: 4 frames at 64 px give (4 * 4, 64) float32 = 4,096 bytes plus 40 bytes of
timestamps (4,344 serialized); a real SmolVLM2-2.2B at 384 px gives 81 rows per frame,
2048 wide (bf16: ~332 KB per frame).

The LM half writes the same text the fused processor writes in place of ``<video>`` —
intro with the frame count in words and the H:MM:SS duration, then per frame the timestamp
line and ``<fake_token_around_image><global-img>`` + ``<image>`` * image_seq_len +
``<fake_token_around_image>`` — and passes the rows as precomputed image encoder outputs.
Timestamps are relative to the clip start because the encoder sees one clip's frames.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

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

# SmolVLM2 (SmolLM2 LM): "User: ...<end_of_utterance>\nAssistant:"; each video frame becomes a
# timestamped image block that the processor writes in place of <video>.
SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    "<video>",
)
CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}"
    "{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'video' %}<video>{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


@register
class SmolVLM(PlaceholderFamily):
    model_type = "smolvlm"
    docs = (
        FamilyDoc(
            "SmolVLM2",
            "`HuggingFaceTB/SmolVLM2-256M-Video-Instruct`, `…-2.2B-Instruct`",
            'frames as images with "Frame from MM:SS" timestamps',
            "`image_embeds` (16×64) + frame times: 4.3 KB",
        ),
    )
    vision_modules = ("vision_model", "connector")
    supports_chat = True
    language_module = "text_model"

    @classmethod
    def build_tiny(
        cls,
        out_dir: str | Path,
        *,
        hidden_size: int = 64,
        num_layers: int = 2,
        vision_dim: int = 32,
        vision_depth: int = 2,
        image_size: int = 64,
        seed: int = 0,
    ) -> Path:
        """SigLIP-style tower, pixel-shuffle connector, Llama LM."""
        from transformers import (
            SmolVLMConfig,
            SmolVLMForConditionalGeneration,
            SmolVLMImageProcessor,
            SmolVLMProcessor,
            SmolVLMVideoProcessor,
        )

        tokenizer = build_bpe_tokenizer(
            SPECIAL_TOKENS,
            bos="<|im_start|>",
            eos="<end_of_utterance>",
            pad="<|im_end|>",
            named={
                "image_token": "<image>",
                "video_token": "<video>",
                "fake_image_token": "<fake_token_around_image>",
                "global_image_token": "<global-img>",
                "end_of_utterance_token": "<end_of_utterance>",
            },
        )
        ids = token_ids(tokenizer, SPECIAL_TOKENS)
        patch, scale = 16, 2
        config = SmolVLMConfig(
            text_config=dict(
                model_type="llama",
                **tiny_text_config(tokenizer, hidden_size, num_layers),
                bos_token_id=ids["<|im_start|>"],
                eos_token_id=ids["<end_of_utterance>"],
                pad_token_id=ids["<|im_end|>"],
            ),
            vision_config=dict(
                hidden_size=vision_dim,
                intermediate_size=vision_dim * 2,
                num_hidden_layers=vision_depth,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=patch,
            ),
            image_token_id=ids["<image>"],
            scale_factor=scale,
            pad_token_id=ids["<|im_end|>"],
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        model = SmolVLMForConditionalGeneration(config).eval()
        # Frames are squared to image_size; the hub's video_sampling block sets the defaults
        # the processor's own frame sampler would use (the pipeline samples frames itself).
        edge = {"longest_edge": image_size}
        sampling = {"fps": 1, "max_frames": 64, "video_size": edge}
        processor = SmolVLMProcessor(
            image_processor=SmolVLMImageProcessor(
                size=edge, max_image_size=edge, do_image_splitting=False
            ),
            video_processor=SmolVLMVideoProcessor(
                size=edge, max_image_size=edge, video_sampling=sampling
            ),
            tokenizer=tokenizer,
            image_seq_len=(image_size // patch) ** 2 // scale**2,
            chat_template=CHAT_TEMPLATE,
        )
        return sharpen_and_save(
            model, processor, out_dir, eos_id=ids["<end_of_utterance>"], pad_id=ids["<|im_end|>"]
        )

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        vp = self.processor.video_processor
        # Every frame is squared to max_image_size, so all clips' frames stack into one
        # "sample" of images for a single tower call; rows come back in frame order.
        with rejected_inputs("video processor"):
            batches = [
                vp(videos=[c.frames], return_tensors="pt", do_sample_frames=False) for c in clips
            ]
        pixels = torch.cat([b["pixel_values"][0] for b in batches])[None]
        mask = torch.cat([b["pixel_attention_mask"][0] for b in batches])[None]
        out = self.visual_model.get_image_features(
            pixel_values=pixels.to(self.device, self.dtype),
            pixel_attention_mask=mask.to(self.device),
            return_dict=True,
        )
        rows = out.pooler_output[0]
        per_frame = rows.shape[0] // pixels.shape[1]
        results, start = [], 0
        for clip in clips:
            n = len(clip.frames)
            results.append(
                {
                    "image_embeds": rows[start : start + n * per_frame].cpu(),
                    "frame_ts_s": torch.arange(n, dtype=torch.float64) / clip.sampled_fps,
                    "duration_s": torch.tensor([n / clip.sampled_fps], dtype=torch.float64),
                }
            )
            start += n * per_frame
        return results

    def video_text(self, frame_ts_s: Sequence[float], duration_s: float) -> str:
        """What the processor writes in place of ``<video>`` (see ``replace_video_token``)."""
        from num2words import num2words  # the SmolVLM processor itself requires it

        proc = self.processor
        image = (
            proc.fake_image_token
            + proc.global_image_token
            + proc.image_token * proc.image_seq_len
            + proc.fake_image_token
        )
        text = (
            f"You are provided the following series of {num2words(len(frame_ts_s))} frames "
            f"from a {timedelta(seconds=int(duration_s))} [H:MM:SS] video.\n"
        )
        for t in frame_ts_s:
            text += f"\nFrame from {int(t // 60):02d}:{int(t % 60):02d}:" + image
        return text + "\n\n"

    def request_text(self, request: GenRequest) -> str:
        enc = request.encoded
        messages = self.chat_messages(request, [{"type": "video"}])
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        video = self.video_text(enc["frame_ts_s"].tolist(), enc["duration_s"].item())
        return text.replace(self.video_token, video, 1)

    def visual_inputs(self, requests: Sequence[GenRequest]) -> dict:
        rows = tuple(r.encoded["image_embeds"].to(self.device, self.dtype) for r in requests)
        return {"mm_encoder_outputs": {"image": BaseModelOutputWithPooling(pooler_output=rows)}}
