"""IDEFICS (the open Flamingo reproduction): frames as interleaved images, gated cross-attention.

Each sampled frame is one image of the prompt: the processor writes ``<s>User:``, then per
frame ``<fake_token_around_image><image>`` (one closing fake token after the last), then
the text. The LM never sees visual rows as tokens; its gated cross-attention layers attend,
from every text token, to the rows of the latest image before it (Flamingo's masking), and
the frames before reach later tokens through their ``<image>`` tokens' hidden states.

What crosses the stage boundary per clip: ``image_hidden_states`` (frames, rows, vision
hidden) — what the cross-attention attends to: the Perceiver resampler's latents when the
checkpoint uses one (all released ones do), else the tower's last hidden state. Tiny model
(4 latents, width 32, float32): 4 frames give (4, 4, 32) = 2,048 bytes (2,136 serialized);
idefics-9b gives 64 latents of 1280 per frame (bf16: ~164 KB per frame).

The fused ``generate`` accepts precomputed features, but only as ``image_encoder_embeddings``
(the tower's output), which it resamples again at every step; precomputed
``perceiver_embeddings`` break at the second step, where the model feeds its own cached
features back as ``image_encoder_embeddings`` beside them. So the LM half, which holds no
resampler, is configured ``use_resampler=False`` and given the latents as
``image_encoder_embeddings``: every step then sees the very rows the fused model recomputes.
Instruct checkpoints end the answer with ``<end_of_utterance>`` and must not write image
tokens; the LM half stops and bans them as the model card's ``generate`` call does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import transformers

from pipelines.models import register
from pipelines.models.base import FamilyDoc, FramesInput, GenRequest, rejected_inputs
from pipelines.models.halves import Split, load_without
from pipelines.models.placeholder import PlaceholderFamily
from pipelines.models.tiny import build_bpe_tokenizer, sharpen_and_save, token_ids

FAKE_TOKEN = "<fake_token_around_image>"
IMAGE_TOKEN = "<image>"
END_OF_UTTERANCE = "<end_of_utterance>"
# The tiny model's (Llama) vocabulary starts with these; instruct checkpoints end user
# turns with <end_of_utterance>.
SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", FAKE_TOKEN, IMAGE_TOKEN, END_OF_UTTERANCE)


@register
class Idefics(PlaceholderFamily):
    model_type = "idefics"
    docs = (
        FamilyDoc(
            "Flamingo (IDEFICS)",
            "`HuggingFaceM4/idefics-9b-instruct`",
            "frames as interleaved images; perceiver-resampled rows cross-attended (gated)",
            "`image_hidden_states` (4×4×32): 2.1 KB",
        ),
    )

    @classmethod
    def split(cls) -> Split:
        # The decoder's embeddings, self- and gated cross-attention layers and head are the
        # LM; only checkpoints with ``use_resampler`` build the resampler.
        return Split(
            encoder=("model.vision_model", "model.perceiver_resampler"),
            lm=(
                "model.embed_tokens",
                "model.layers",
                "model.gated_cross_attn_layers",
                "model.norm",
                "lm_head",
            ),
            optional=frozenset({"model.perceiver_resampler"}),
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
        num_latents: int = 4,
        image_size: int = 32,
        seed: int = 0,
    ) -> Path:
        """CLIP-style tower, Perceiver resampler, gated cross-attention."""
        from transformers import IdeficsConfig, IdeficsProcessor
        from transformers.models.idefics import IdeficsImageProcessor

        tokenizer = build_bpe_tokenizer(
            SPECIAL_TOKENS, bos="<s>", eos="</s>", pad="<unk>", prepend_bos=False
        )
        ids = token_ids(tokenizer, SPECIAL_TOKENS)
        config = IdeficsConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=max(2, hidden_size // 32),
            max_position_embeddings=512,
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<unk>"],
            # Checkpoints learn the tanh gates of the cross-attention; init at zero would make
            # the LM ignore the images entirely.
            alpha_initializer="ones",
            cross_layer_interval=1,
            use_resampler=True,
            vision_config=dict(
                embed_dim=vision_dim,
                intermediate_size=vision_dim * 2,
                num_hidden_layers=vision_depth,
                num_attention_heads=2,
                image_size=image_size,
                patch_size=16,
            ),
            perceiver_config=dict(
                use_resampler=True,
                resampler_n_latents=num_latents,
                resampler_depth=1,
                resampler_n_heads=2,
                resampler_head_dim=16,
            ),
            tie_word_embeddings=False,
        )
        torch.manual_seed(seed)
        model = transformers.IdeficsForVisionText2Text(config).eval()
        with torch.no_grad():
            # At init the resampler's learned latents drown out what they read from the frame
            # (frames differ by ~1e-2); stronger values make the latents follow the pixels.
            for attention, _ in model.model.perceiver_resampler.blocks:
                attention.v_proj.weight.mul_(10.0)
                attention.output_proj.weight.mul_(10.0)
        processor = IdeficsProcessor(
            image_processor=IdeficsImageProcessor(image_size=image_size),
            tokenizer=tokenizer,
            image_size=image_size,
        )
        return sharpen_and_save(model, processor, out_dir, eos_id=ids["</s>"], pad_id=ids["<unk>"])

    def _load(self, removed: Sequence[str]) -> transformers.IdeficsForVisionText2Text:
        cfg = self.config
        self.processor = transformers.AutoProcessor.from_pretrained(
            cfg.model, revision=cfg.revision
        )
        self.video_token = IMAGE_TOKEN  # the placeholder users may not type
        return load_without(
            transformers.IdeficsForVisionText2Text,
            cfg.model,
            removed,
            optional=self.split().optional,
            revision=cfg.revision,
            dtype=self.dtype,
        )

    # -- encoder half ------------------------------------------------------------------

    def load_encoder(self) -> None:
        model = self._load(self.split().lm)
        self.vision_model = model.model.vision_model.to(self.device)
        resampler = model.model.perceiver_resampler if model.config.use_resampler else None
        self.resampler = None if resampler is None else resampler.to(self.device)

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        # Frames are independent through tower and resampler: all clips' in one batch.
        with rejected_inputs("image processor"):
            pixels = self.processor.image_processor(
                [f for c in clips for f in c.frames], return_tensors="pt"
            )
        rows = self.vision_model(pixel_values=pixels.to(self.device, self.dtype)).last_hidden_state
        if self.resampler is not None:
            rows = self.resampler(rows)
        rows = rows.cpu()
        results, start = [], 0
        for clip in clips:
            results.append({"image_hidden_states": rows[start : start + len(clip.frames)]})
            start += len(clip.frames)
        return results

    # -- language-model half -----------------------------------------------------------

    def load_lm(self) -> None:
        model = self._load(self.split().encoder)
        if model.config.use_resampler:  # its slot is None: the resampler was never loaded
            del model.model.perceiver_resampler
            model.config.use_resampler = False  # rows arrive resampled (see module doc)
        self.lm = model.to(self.device)
        self.max_positions = model.config.max_position_embeddings
        tok = self.tokenizer
        known = set(tok.get_vocab())
        self.end_of_utterance = END_OF_UTTERANCE if END_OF_UTTERANCE in known else ""
        gen = self.lm.generation_config
        if self.end_of_utterance:  # instruct checkpoints: the turn ends the answer
            eos = gen.eos_token_id
            eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
            gen.eos_token_id = [*eos, tok.convert_tokens_to_ids(END_OF_UTTERANCE)]
        gen.bad_words_ids = [[tok.convert_tokens_to_ids(t)] for t in (IMAGE_TOKEN, FAKE_TOKEN)]

    def prompt_text(self, prompt: str, num_frames: int) -> str:
        """What the processor writes for ``["User:", *frames, prompt, eou, "\\nAssistant:"]``."""
        images = FAKE_TOKEN + (IMAGE_TOKEN + FAKE_TOKEN) * num_frames
        return (
            f"{self.tokenizer.bos_token}User:{images}{prompt.strip(' ')}"
            f"{self.end_of_utterance}\nAssistant:"
        )

    def request_text(self, request: GenRequest) -> str:
        return self.prompt_text(request.prompt, request.encoded["image_hidden_states"].shape[0])

    def generate_kwargs(self, requests: Sequence[GenRequest], texts: list[str]) -> dict:
        tok = self.tokenizer
        enc = tok(
            texts,
            add_special_tokens=False,  # the text already starts with BOS, as the processor's
            return_tensors="pt",
            padding=True,
            padding_side="left",
        )
        frames = max(r.encoded["image_hidden_states"].shape[0] for r in requests)
        # Token -> latest preceding image, exactly as the processor computes it.
        from transformers.models.idefics.processing_idefics import (
            image_attention_mask_for_packed_input_ids,
            incremental_to_binary_attention_mask,
        )

        latest, _ = image_attention_mask_for_packed_input_ids(enc["input_ids"], tok, "pt")
        image_mask = incremental_to_binary_attention_mask(latest, "pt", num_classes=frames)
        return {
            "input_ids": enc["input_ids"].to(self.device),
            "attention_mask": enc["attention_mask"].to(self.device),
            "image_attention_mask": image_mask.to(self.device),
            **self.visual_inputs(requests),
        }

    def visual_inputs(self, requests: Sequence[GenRequest]) -> dict:
        # (batch, frames, rows, hidden); clips with fewer frames are zero-padded, which the
        # image attention mask hides (the processor pads pixel_values the same way).
        rows = [r.encoded["image_hidden_states"] for r in requests]
        padded = torch.zeros(len(rows), max(len(r) for r in rows), *rows[0].shape[1:])
        for i, r in enumerate(rows):
            padded[i, : len(r)] = r
        return {"image_encoder_embeddings": padded.to(self.device, self.dtype)}
