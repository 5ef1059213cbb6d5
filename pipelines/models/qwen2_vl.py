"""Qwen2-VL and Qwen2.5-VL: native video input, M-RoPE positions from the video grid.

What crosses the stage boundary per clip:
- ``video_embeds``: (tokens, hidden) merged visual tokens, the vision tower's projector output;
- ``video_grid_thw``: (3,) int64 temporal/height/width patch grid, needed for M-RoPE;
- ``second_per_grid_ts``: (1,) seconds per temporal patch (Qwen2.5-VL only, for its
  absolute-time M-RoPE).
The LM half expands the single video placeholder of the chat prompt to one token per
embedding row, exactly as the fused processor does, and hands the embeddings to
``generate`` as precomputed encoder outputs, so the vision tower never runs there.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.modeling_outputs import BaseModelOutputWithPooling

from pipelines.config import GenerationConfig
from pipelines.errors import ErrorCode, StageError
from pipelines.models import register
from pipelines.models.base import (
    FramesInput,
    GenOutput,
    GenRequest,
    SamplingHints,
    VideoLMFamily,
)


@register
class QwenVL(VideoLMFamily):
    model_types = ("qwen2_vl", "qwen2_5_vl")
    # Frames are grouped in pairs per temporal patch; qwen-vl-utils samples at least 4.
    hints = SamplingHints(min_frames=4, frame_factor=2)

    def _load(self):
        cfg = self.config
        self.processor = AutoProcessor.from_pretrained(cfg.model, revision=cfg.revision)
        self.video_token = self.processor.video_token
        self.video_token_id = self.processor.video_token_id
        self.uses_grid_seconds = "second_per_grid_ts" in self.processor.model_input_names
        model = AutoModelForImageTextToText.from_pretrained(
            cfg.model, revision=cfg.revision, dtype=self.dtype
        )
        return model.eval()

    # -- encoder half ------------------------------------------------------------------

    def load_encoder(self) -> None:
        model = self._load()
        # Keep only the vision tower (its merger is the projector into the LM's space).
        self.visual_model = model.model
        self.visual_model.language_model = None
        self.visual_model.to(self.device)

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        vp = self.processor.video_processor
        batch = vp(videos=[c.frames for c in clips], return_tensors="pt", do_sample_frames=False)
        grid = batch["video_grid_thw"]
        out = self.visual_model.get_video_features(
            pixel_values_videos=batch["pixel_values_videos"].to(self.device, self.dtype),
            video_grid_thw=grid.to(self.device),
            return_dict=True,
        )
        results = []
        for clip, embeds, thw in zip(clips, out.pooler_output, grid, strict=True):
            item = {"video_embeds": embeds.cpu(), "video_grid_thw": thw.clone()}
            if self.uses_grid_seconds:
                seconds = vp.temporal_patch_size / clip.sampled_fps
                item["second_per_grid_ts"] = torch.tensor([seconds], dtype=torch.float32)
            results.append(item)
        return results

    # -- language-model half -----------------------------------------------------------

    def load_lm(self) -> None:
        model = self._load()
        model.model.visual = None  # the encoder actor owns the vision tower
        self.lm = model.to(self.device)
        self.max_positions = model.config.text_config.max_position_embeddings

    def prompt_text(self, prompt: str, num_video_tokens: int) -> str:
        messages = [
            {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}
        ]
        text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        return text.replace(self.video_token, self.video_token * num_video_tokens, 1)

    @property
    def tokenizer(self):
        return self.processor.tokenizer

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenRequest], settings: GenerationConfig, streamer=None
    ) -> list[GenOutput | StageError]:
        results: list[GenOutput | StageError | None] = [None] * len(requests)
        texts, keep = [], []
        tok = self.processor.tokenizer
        for i, req in enumerate(requests):
            if self.video_token in req.prompt:
                results[i] = StageError(
                    ErrorCode.MODEL_ERROR, "prompt contains the video placeholder token", "generate"
                )
                continue
            text = self.prompt_text(req.prompt, req.encoded["video_embeds"].shape[0])
            length = len(tok(text)["input_ids"])
            if length + settings.max_new_tokens > self.max_positions:
                results[i] = StageError(
                    ErrorCode.PROMPT_TOO_LONG,
                    f"{length} prompt tokens + max_new_tokens={settings.max_new_tokens} exceed "
                    f"the model's {self.max_positions} positions; shorten clip_s, lower fps "
                    "or max_side_px",
                    "generate",
                )
                continue
            texts.append(text)
            keep.append(i)
        if keep:
            for i, out in zip(
                keep,
                self._generate([requests[i] for i in keep], texts, settings, streamer),
                strict=True,
            ):
                results[i] = out
        return results  # type: ignore[return-value]

    def _generate(
        self,
        requests: Sequence[GenRequest],
        texts: list[str],
        settings: GenerationConfig,
        streamer=None,
    ) -> list[GenOutput]:
        tok = self.processor.tokenizer
        enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
        ids = enc["input_ids"]
        kwargs = {
            "input_ids": ids.to(self.device),
            "attention_mask": enc["attention_mask"].to(self.device),
            "mm_token_type_ids": torch.tensor(
                self.processor.create_mm_token_type_ids(ids.tolist()), device=self.device
            ),
            "video_grid_thw": torch.stack([r.encoded["video_grid_thw"] for r in requests]).to(
                self.device
            ),
            "mm_encoder_outputs": {
                "video": BaseModelOutputWithPooling(
                    pooler_output=tuple(
                        r.encoded["video_embeds"].to(self.device, self.dtype) for r in requests
                    )
                )
            },
        }
        if self.uses_grid_seconds:
            kwargs["second_per_grid_ts"] = torch.cat(
                [r.encoded["second_per_grid_ts"] for r in requests]
            ).to(self.device)
        sampling = settings.temperature > 0
        if sampling:
            torch.manual_seed(settings.seed)
        out = self.lm.generate(
            **kwargs,
            max_new_tokens=settings.max_new_tokens,
            do_sample=sampling,
            temperature=settings.temperature if sampling else None,
            top_p=settings.top_p if sampling else None,
            top_k=None,
            pad_token_id=tok.pad_token_id,
            streamer=streamer,
        )
        new = out[:, ids.shape[1] :].cpu()
        prompt_lens = enc["attention_mask"].sum(dim=1).tolist()
        stop = {tok.pad_token_id, *self._eos_ids()}
        results = []
        for row, prompt_len in zip(new.tolist(), prompt_lens, strict=True):
            tokens = []
            for t in row:
                if t in stop:
                    break
                tokens.append(t)
            text = tok.decode(tokens, skip_special_tokens=True)
            results.append(GenOutput(text=text, token_ids=tuple(tokens), prompt_tokens=prompt_len))
        return results

    def _eos_ids(self) -> list[int]:
        eos = self.lm.generation_config.eos_token_id
        return list(eos) if isinstance(eos, (list, tuple)) else [eos] if eos is not None else []
