"""BLIP-2 on frames: Q-Former query rows per sampled frame, concatenated in frame order.

BLIP-2 is an image model. Each sampled frame goes on its own through the ViT, the Q-Former
(``num_query_tokens`` learned queries cross-attending to that frame's patches) and the
language projection; a clip's rows are its frames' query rows *concatenated* frame after
frame, and the LM prompt gets one image token per row, before the BOS, where the processor
puts a single image's tokens. Concatenation rather than pooling: it is exactly what HF's
fused ``generate`` does when handed F images and F x ``num_query_tokens`` image tokens (it
projects all queries, then ``masked_scatter``s them into the image tokens in order), so the
split path has a fused reference, and the LM's position embeddings keep frame order.
Checkpoints were trained on one image per prompt, so several frames are zero-shot for them.

Budget: a clip contributes at most ``max_frames_tokens`` rows, by default half the LM's
positions (OPT: 2048 -> 1024 rows = 32 frames of 32 queries), leaving the other half for
the prompt and the generated text. A clip with more frames is subsampled uniformly (first
and last kept) to ``max_frames_tokens // num_query_tokens`` frames before the tower runs.

What crosses the stage boundary per clip: ``query_embeds`` (kept frames x num_query_tokens,
LM hidden) — the projected Q-Former outputs. Tiny model (8 queries, LM width 64, float32):
4 frames give (32, 64) = 8,192 bytes (8,272 serialized); blip2-opt-2.7b gives 32 rows of
2560 per frame (bf16: ~164 KB per frame).

The LM half holds only ``language_model`` (OPT/...); the tower, queries, Q-Former and
projection stay in the encoder actor. ``Blip2ForConditionalGeneration.generate`` takes no
precomputed features, so the LM half repeats its last step itself: embed the ids, scatter
the rows into the image tokens, ``language_model.generate(inputs_embeds=..., input_ids=...)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import transformers

from pipelines.models import register
from pipelines.models.base import FamilyDoc, FramesInput, GenRequest, rejected_inputs
from pipelines.models.halves import Split, load_without
from pipelines.models.placeholder import PlaceholderFamily
from pipelines.models.tiny import build_bpe_tokenizer, sharpen_and_save, token_ids
from pipelines.models.vision_encoder_decoder import resample_indices

# The tiny model's LM is OPT: no chat template; the processor puts the query-token
# placeholders before the BOS that the OPT tokenizer prepends.
SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<image>")


@register
class Blip2(PlaceholderFamily):
    model_type = "blip-2"
    docs = (
        FamilyDoc(
            "BLIP-2",
            "`Salesforce/blip2-opt-2.7b`",
            "Q-Former query rows per sampled frame, **concatenated in frame order** up to a "
            "budget (half the LM's positions; longer clips subsampled uniformly, first and "
            "last frame kept); `Question: … Answer:` prompt",
            "`query_embeds` (4 frames × queries × hidden): 8.3 KB",
        ),
    )
    # BLIP-2's documented question-answering format; an empty prompt means plain captioning
    # (image tokens + BOS only, the fused generate's own default).
    prompt_template: ClassVar[str] = "Question: {prompt} Answer:"

    @classmethod
    def split(cls) -> Split:
        # Tower, learned queries (a parameter), Q-Former and projection make the rows; the
        # LM (lm_head included) is the whole language half.
        return Split(
            encoder=("vision_model", "query_tokens", "qformer", "language_projection"),
            lm=("language_model",),
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
        qformer_dim: int = 32,
        num_query_tokens: int = 8,
        image_size: int = 32,
        seed: int = 0,
    ) -> Path:
        """ViT tower, Q-Former with ``num_query_tokens`` queries, OPT LM."""
        from transformers import Blip2Config, Blip2Processor, BlipImageProcessor

        tokenizer = build_bpe_tokenizer(
            SPECIAL_TOKENS,
            bos="</s>",
            prepend_bos=True,  # OPT's tokenizer prepends </s>
            eos="</s>",
            pad="<pad>",
            # No named image_token: Blip2Processor registers "<image>" itself (and, in this
            # transformers, fails on a tokenizer that already names one).
        )
        ids = token_ids(tokenizer, SPECIAL_TOKENS)
        config = Blip2Config(
            vision_config=dict(
                hidden_size=vision_dim,
                intermediate_size=vision_dim * 2,
                num_hidden_layers=vision_depth,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=16,
                initializer_range=0.02,  # the default (1e-10) leaves the tower blind to pixels
            ),
            qformer_config=dict(
                hidden_size=qformer_dim,
                intermediate_size=qformer_dim * 2,
                num_hidden_layers=2,
                num_attention_heads=2,
                encoder_hidden_size=vision_dim,
                cross_attention_frequency=1,
            ),
            text_config=dict(
                model_type="opt",
                vocab_size=len(tokenizer),
                hidden_size=hidden_size,
                ffn_dim=hidden_size * 2,
                num_hidden_layers=num_layers,
                num_attention_heads=max(2, hidden_size // 32),
                max_position_embeddings=512,
                bos_token_id=ids["</s>"],
                eos_token_id=ids["</s>"],
                pad_token_id=ids["<pad>"],
                tie_word_embeddings=False,
            ),
            num_query_tokens=num_query_tokens,
            image_token_index=ids["<image>"],
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        model = transformers.Blip2ForConditionalGeneration(config).eval()
        with torch.no_grad():
            # Init leaves the learned queries at zero, so every query row of a frame would be
            # the same; a trained model's queries differ.
            model.query_tokens.normal_(std=1.0)
            # At init the queries drown out what they read from the image (frames differ by
            # ~1e-3 in the projected rows); a stronger cross-attention makes rows follow pixels.
            for layer in model.qformer.encoder.layer:
                layer.crossattention.attention.value.weight.mul_(10.0)
                layer.crossattention.output.dense.weight.mul_(10.0)
        processor = Blip2Processor(
            image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
            tokenizer=tokenizer,
            num_query_tokens=num_query_tokens,
        )
        return sharpen_and_save(model, processor, out_dir, eos_id=ids["</s>"], pad_id=ids["<pad>"])

    def _load(self, removed: Sequence[str]) -> transformers.Blip2ForConditionalGeneration:
        cfg = self.config
        self.processor = transformers.AutoProcessor.from_pretrained(
            cfg.model, revision=cfg.revision
        )
        token = self.processor.image_token
        self.video_token = getattr(token, "content", token)  # the placeholder users may not type
        model = load_without(
            transformers.Blip2ForConditionalGeneration,
            cfg.model,
            removed,
            revision=cfg.revision,
            dtype=self.dtype,
        )
        self.num_query_tokens = model.config.num_query_tokens
        self.image_token_id = model.config.image_token_id
        return model

    # -- encoder half ------------------------------------------------------------------

    def load_encoder(self) -> None:
        model = self._load(self.split().lm)
        self.visual_model = model.to(self.device)
        self.max_frames_tokens = model.config.text_config.max_position_embeddings // 2

    def frame_indices(self, num_frames: int) -> np.ndarray:
        """Which sampled frames are encoded: all, or a uniform subset within the budget."""
        most = max(1, self.max_frames_tokens // self.num_query_tokens)
        if num_frames <= most:
            return np.arange(num_frames)
        return resample_indices(num_frames, most)

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        # Frames are independent through tower and Q-Former: all clips' frames in one batch.
        kept = [c.frames[self.frame_indices(len(c.frames))] for c in clips]
        with rejected_inputs("image processor"):
            pixels = self.processor.image_processor(
                [f for frames in kept for f in frames], return_tensors="pt"
            )["pixel_values"]
        out = self.visual_model.get_image_features(
            pixel_values=pixels.to(self.device, self.dtype), return_dict=True
        )
        rows = out.pooler_output.cpu()  # (all kept frames, num_query_tokens, LM hidden)
        results, start = [], 0
        for frames in kept:
            results.append({"query_embeds": rows[start : start + len(frames)].flatten(0, 1)})
            start += len(frames)
        return results

    # -- language-model half -----------------------------------------------------------

    def load_lm(self) -> None:
        model = self._load(self.split().encoder)
        self.lm = model.language_model.to(self.device)
        self.max_positions = model.config.text_config.max_position_embeddings

    def prompt_text(self, prompt: str) -> str:
        return self.prompt_template.format(prompt=prompt) if prompt.strip() else ""

    def request_text(self, request: GenRequest) -> str:
        # Same token count as the ids below (only used for the length check).
        rows = request.encoded["query_embeds"].shape[0]
        return self.video_token * rows + self.prompt_text(request.prompt)

    def generate_kwargs(self, requests: Sequence[GenRequest], texts: list[str]) -> dict:
        # The image tokens go before the BOS the tokenizer prepends (as Blip2Processor
        # does), so ids are assembled per request rather than tokenized from ``texts``.
        tok = self.tokenizer
        seqs = [
            [self.image_token_id] * r.encoded["query_embeds"].shape[0]
            + tok(self.prompt_text(r.prompt))["input_ids"]
            for r in requests
        ]
        width = max(len(s) for s in seqs)
        input_ids = torch.tensor(
            [[tok.pad_token_id] * (width - len(s)) + s for s in seqs], device=self.device
        )
        mask = torch.tensor(
            [[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=self.device
        )
        return {
            "input_ids": input_ids,
            "attention_mask": mask,
            "inputs_embeds": self.embed_inputs(requests, input_ids),
        }

    def embed_inputs(self, requests: Sequence[GenRequest], input_ids: torch.Tensor):
        """The fused generate's last step: query rows scattered into the image tokens in
        row-major order, so the rows of all requests go in batch order."""
        embeds = self.lm.get_input_embeddings()(input_ids)
        rows = torch.cat([r.encoded["query_embeds"] for r in requests])
        image = (input_ids == self.image_token_id).unsqueeze(-1)
        return embeds.masked_scatter(image, rows.to(embeds.device, embeds.dtype))

    def visual_inputs(self, requests: Sequence[GenRequest]) -> dict:
        return {}  # the rows travel inside inputs_embeds; BLIP-2 has no side inputs
