"""VisionEncoderDecoder captioners: a vision encoder + a text decoder (GPT-2) with cross-attention.

Two encoder kinds, picked from ``config.encoder.model_type``:
- image encoders (CLIP ViT, ViT, ...): every sampled frame goes through the encoder on its
  own; the clip's encoder states are the frames' last hidden states (CLS + patches)
  *concatenated along the sequence*, frame after frame, so the decoder cross-attends over
  all frames at once. GPT-2's cross-attention carries no key positions, so it sees the set
  of frame tokens, not their order (a test pins this down); use a video encoder when order
  matters.
- video encoders (VideoMAE, TimeSformer): the clip is resampled to the encoder's fixed
  ``num_frames`` (uniform indices, repeating frames of short clips) and encoded natively;
  space-time position embeddings make the states order-aware.

What crosses the stage boundary per clip: ``encoder_hidden_states`` (rows, encoder hidden)
— the encoder's raw last hidden state; the ``enc_to_dec_proj`` projection (present when the
widths differ) stays with the decoder, where the fused forward applies it. Tiny models
(32 px, 16 px patches, width 32, float32): CLIP 4 frames x 5 rows = 2,560 bytes (2,656
serialized); VideoMAE 4 frames (tubelet 2) = 8 rows = 1,024 bytes (1,112); TimeSformer
4 x 4 + 1 = 17 rows = 2,176 bytes (2,272).

These captioners are not instruction-tuned: the decoder starts from its start token and the
request's prompt is not given to it (``prompt_tokens`` is 1). The decoder takes no encoder
attention mask, so a batch is generated in groups of equal encoder length.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers.modeling_outputs import BaseModelOutput

from pipelines.core.config import GenerationConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.models import register
from pipelines.models.base import (
    FamilyDoc,
    FramesInput,
    GenOutput,
    GenRequest,
    VideoLMFamily,
    decoding_kwargs,
    rejected_inputs,
    stop_ids,
    until_stop,
)
from pipelines.models.halves import Split, load_without
from pipelines.models.tiny import build_bpe_tokenizer, sharpen_and_save

# Encoders that take a whole clip of a fixed frame count rather than single images.
VIDEO_ENCODERS = frozenset({"videomae", "timesformer"})

# The projection to the decoder's width runs in the fused forward, after the encoder: the
# decoder's side (see the module doc).
SPLIT = Split(encoder=("encoder",), lm=("decoder", "enc_to_dec_proj"))


class RemovedEncoder(torch.nn.Module):
    """Weightless stand-in for the encoder in the LM actor.

    ``generate`` reads ``encoder.main_input_name`` and the fused forward reads
    ``encoder.config.hidden_size`` (to decide on ``enc_to_dec_proj``) even when handed
    ``encoder_outputs``, so the attribute cannot simply be None.
    """

    def __init__(self, encoder: torch.nn.Module) -> None:
        super().__init__()
        self.config = encoder.config
        self.main_input_name = encoder.main_input_name

    def forward(self, *args, **kwargs):
        raise RuntimeError("the encoder runs in the encoder stage; pass encoder_outputs")


def resample_indices(num_frames: int, target: int) -> np.ndarray:
    """``target`` frame indices spread uniformly over ``num_frames`` (repeats if fewer)."""
    return np.linspace(0, num_frames - 1, target).round().astype(int)


def _tiny_clip(vision: dict, image_size: int, num_frames: int):
    from transformers import CLIPImageProcessor
    from transformers.models.clip import CLIPVisionConfig

    square = {"height": image_size, "width": image_size}
    preprocessor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=square)
    return CLIPVisionConfig(**vision), preprocessor


def _tiny_videomae(vision: dict, image_size: int, num_frames: int):
    from transformers import VideoMAEConfig, VideoMAEVideoProcessor

    square = {"height": image_size, "width": image_size}
    config = VideoMAEConfig(**vision, num_frames=num_frames, tubelet_size=2, use_mean_pooling=False)
    return config, VideoMAEVideoProcessor(size={"shortest_edge": image_size}, crop_size=square)


def _tiny_timesformer(vision: dict, image_size: int, num_frames: int):
    from transformers import TimesformerConfig, TimesformerVideoProcessor

    square = {"height": image_size, "width": image_size}
    config = TimesformerConfig(**vision, num_frames=num_frames)
    return config, TimesformerVideoProcessor(size={"shortest_edge": image_size}, crop_size=square)


# Tiny encoders by kind: (vision keys, image size, frames) -> (encoder config, preprocessor).
TINY_ENCODERS = {"clip": _tiny_clip, "videomae": _tiny_videomae, "timesformer": _tiny_timesformer}


@register
class VisionEncoderDecoder(VideoLMFamily):
    model_type = "vision-encoder-decoder"
    docs = (
        FamilyDoc(
            "CLIP + GPT-2",
            "e.g. `nlpconnect/vit-gpt2-image-captioning`",
            "per-frame encoder states concatenated over frames, cross-attended (order-blind: "
            "GPT-2 cross-attention has no key positions)",
            "`encoder_hidden_states` (20×32): 2.7 KB",
            model_type_note="CLIP/ViT encoder",
        ),
        FamilyDoc(
            "TimeSformer / VideoMAE + GPT-2",
            "e.g. `Neleac/timesformer-gpt2-video-captioning`",
            "native clip at the encoder's fixed frame count",
            "`encoder_hidden_states` (17×32 / 8×32): 2.3 / 1.1 KB",
            model_type_note="video encoder",
        ),
    )
    tiny_variants = tuple({"encoder": kind} for kind in TINY_ENCODERS)

    @classmethod
    def build_tiny(
        cls,
        out_dir: str | Path,
        *,
        encoder: str = "clip",
        hidden_size: int = 64,
        num_layers: int = 2,
        vision_dim: int = 32,
        vision_depth: int = 2,
        image_size: int = 32,
        num_frames: int = 4,
        seed: int = 0,
    ) -> Path:
        """A vision encoder + GPT-2 with cross-attention.

        ``encoder`` is ``clip`` (per-frame CLIP ViT, an image processor), or ``videomae`` /
        ``timesformer`` (a clip of exactly ``num_frames`` frames, a video processor).
        """
        from transformers import GPT2Config, VisionEncoderDecoderConfig

        if encoder not in TINY_ENCODERS:
            raise ValueError(f"encoder must be one of {sorted(TINY_ENCODERS)}, got {encoder!r}")
        out = Path(out_dir)
        tokenizer = build_bpe_tokenizer(
            ("<|endoftext|>",), bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>"
        )
        eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        vision = dict(
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            num_hidden_layers=vision_depth,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=16,
        )
        enc_config, preprocessor = TINY_ENCODERS[encoder](vision, image_size, num_frames)
        dec_config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=hidden_size,
            n_layer=num_layers,
            n_head=max(2, hidden_size // 32),
            n_positions=256,
            bos_token_id=eos,
            eos_token_id=eos,
            pad_token_id=eos,
            tie_word_embeddings=False,
        )
        config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc_config, dec_config)
        config.decoder_start_token_id = eos
        config.pad_token_id = eos
        config.eos_token_id = eos
        config.tie_word_embeddings = False
        torch.manual_seed(seed)
        model = transformers.VisionEncoderDecoderModel(config=config).eval()
        # Random encoder states of similar videos look alike to random cross-attention; a
        # wider encoder->decoder projection sharpens it so greedy captions follow the pixels.
        with torch.no_grad():
            model.enc_to_dec_proj.weight.mul_(10.0)
            model.enc_to_dec_proj.bias.mul_(10.0)
            time = getattr(model.encoder.embeddings, "time_embeddings", None)
            if time is not None:
                # Init leaves learned frame-position embeddings (TimeSformer's) at zero, which
                # would make the tiny encoder blind to frame order; a trained one is not.
                time.normal_(std=0.1)
        tokenizer.save_pretrained(out)
        return sharpen_and_save(model, preprocessor, out, eos_id=eos, pad_id=eos)

    def _load(self, removed: Sequence[str], **kwargs) -> transformers.VisionEncoderDecoderModel:
        cfg = self.config
        return load_without(
            transformers.VisionEncoderDecoderModel,
            cfg.model,
            removed,
            revision=cfg.revision,
            dtype=self.dtype,
            **kwargs,
        )

    # -- encoder half ------------------------------------------------------------------

    def load_encoder(self) -> None:
        cfg = self.config
        enc_config = transformers.AutoConfig.from_pretrained(
            cfg.model, revision=cfg.revision
        ).encoder
        self.num_frames = enc_config.num_frames if enc_config.model_type in VIDEO_ENCODERS else None
        load = (
            transformers.AutoImageProcessor
            if self.num_frames is None
            else transformers.AutoVideoProcessor
        )
        self.preprocessor = load.from_pretrained(cfg.model, revision=cfg.revision)
        self.encoder = self._load(SPLIT.lm).encoder.to(self.device)

    @torch.inference_mode()
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        if self.num_frames is None:  # image encoder: all frames of all clips in one batch
            frames = [f for c in clips for f in c.frames]
            with rejected_inputs("image processor"):
                pixels = self.preprocessor(frames, return_tensors="pt")["pixel_values"]
            states = self._run(pixels)
            results, start = [], 0
            for clip in clips:
                n = len(clip.frames)
                results.append({"encoder_hidden_states": states[start : start + n].flatten(0, 1)})
                start += n
            return results
        videos = [c.frames[resample_indices(len(c.frames), self.num_frames)] for c in clips]
        with rejected_inputs("video processor"):
            pixels = torch.cat(
                [self.preprocessor(videos=[v], return_tensors="pt")["pixel_values"] for v in videos]
            )
        return [{"encoder_hidden_states": s} for s in self._run(pixels)]

    def _run(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.encoder(pixel_values=pixels.to(self.device, self.dtype), return_dict=True)
        return out.last_hidden_state.cpu()

    # -- language-model half -----------------------------------------------------------

    def load_lm(self) -> None:
        cfg = self.config
        self._tokenizer = transformers.AutoTokenizer.from_pretrained(
            cfg.model, revision=cfg.revision
        )
        # The encoder actor owns the weights; the stand-in keeps what generate reads.
        model = self._load(SPLIT.encoder, stand_ins={"encoder": RemovedEncoder})

        self.lm = model.to(self.device)
        dec = model.config.decoder
        self.max_positions = getattr(dec, "n_positions", None) or dec.max_position_embeddings

    @property
    def tokenizer(self):
        return self._tokenizer

    def decoder_kwargs(self, states: torch.Tensor) -> dict:
        """``self.lm`` inputs for a batch of equal-length encoder states (B, rows, hidden)."""
        out = BaseModelOutput(last_hidden_state=states.to(self.device, self.dtype))
        return {"encoder_outputs": out}

    @torch.inference_mode()
    def generate(
        self, requests: Sequence[GenRequest], settings: GenerationConfig, streamer=None
    ) -> list[GenOutput | StageError]:
        results: list[GenOutput | StageError | None] = [None] * len(requests)
        groups: dict[int, list[int]] = defaultdict(list)
        for i, req in enumerate(requests):
            if 1 + settings.max_new_tokens > self.max_positions:
                results[i] = StageError(
                    ErrorCode.PROMPT_TOO_LONG,
                    f"max_new_tokens={settings.max_new_tokens} exceeds the decoder's "
                    f"{self.max_positions} positions; lower max_new_tokens",
                    "generate",
                )
                continue
            groups[req.encoded["encoder_hidden_states"].shape[0]].append(i)
        for idx in groups.values():
            states = torch.stack([requests[i].encoded["encoder_hidden_states"] for i in idx])
            for i, out in zip(idx, self._generate(states, settings, streamer), strict=True):
                results[i] = out
        return results  # type: ignore[return-value]

    def _generate(self, states: torch.Tensor, settings: GenerationConfig, streamer) -> list:
        tok = self.tokenizer
        out = self.lm.generate(
            **self.decoder_kwargs(states), **decoding_kwargs(settings), streamer=streamer
        )
        stop = stop_ids(self.lm.generation_config)
        results = []
        for row in out[:, 1:].tolist():  # column 0 is the decoder start token
            tokens = until_stop(row, stop)
            text = tok.decode(tokens, skip_special_tokens=True)
            results.append(GenOutput(text=text, token_ids=tuple(tokens), prompt_tokens=1))
        return results
