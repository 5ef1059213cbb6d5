"""VisionEncoderDecoder (CLIP / VideoMAE / TimeSformer + GPT-2): split == fused captioning.

VideoMAE and TimeSformer take a whole clip, so HF's fused ``generate(pixel_values=...)`` is
the reference. CLIP + GPT-2 has no fused path over several frames; its reference is the
few lines below: every frame through ``model.encoder``, states concatenated frame after
frame, then ``model.generate(encoder_outputs=...)`` on the one full model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoImageProcessor, AutoVideoProcessor, VisionEncoderDecoderModel
from transformers.modeling_outputs import BaseModelOutput

from pipelines.core.config import GenerationConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.models import resolve_family, tiny_cases
from pipelines.models.base import FramesInput, GenRequest
from pipelines.models.vision_encoder_decoder import VisionEncoderDecoder, resample_indices
from tests.unit.models.split_helpers import load_halves, random_video

FPS = 2.0
PROMPT = "Describe this video."
NUM_FRAMES = 4  # the video encoders' fixed clip length in the tiny models
MODEL_TYPES = ("vision-encoder-decoder",)  # every tiny variant: CLIP, VideoMAE, TimeSformer


def _video(seed: int, frames: int = 4, h: int = 48, w: int = 64) -> np.ndarray:
    return random_video(seed, frames, h, w)


@pytest.fixture(scope="module", params=tiny_cases(*MODEL_TYPES), ids=lambda c: c.id)
def halves(request, tiny_model_dir):
    case = request.param
    path = tiny_model_dir(case.model_type, **case.kwargs)
    cls, model_type = resolve_family(path)
    assert cls is VisionEncoderDecoder and model_type == "vision-encoder-decoder"
    enc, lm = load_halves(cls, path)
    fused = VisionEncoderDecoderModel.from_pretrained(path).eval()
    kind = case.kwargs["encoder"]
    if kind != "clip":
        assert fused.config.encoder.num_frames == NUM_FRAMES
    return kind, enc, lm, fused, path


def _fused_inputs(kind, path, fused, video):
    """The fused model's own inputs: pixels for video encoders, concatenated states for CLIP."""
    if kind == "clip":
        pixels = AutoImageProcessor.from_pretrained(path)(list(video), return_tensors="pt")
        with torch.inference_mode():
            states = fused.encoder(pixel_values=pixels["pixel_values"]).last_hidden_state
        return {
            "encoder_outputs": BaseModelOutput(
                last_hidden_state=states.reshape(1, -1, states.shape[-1])
            )
        }
    clip = video[resample_indices(len(video), NUM_FRAMES)]
    return {
        "pixel_values": AutoVideoProcessor.from_pretrained(path)(
            videos=[clip], return_tensors="pt"
        )["pixel_values"]
    }


def _start(fused):
    return torch.tensor([[fused.config.decoder_start_token_id]])


def _split_logits(lm, states):
    with torch.inference_mode():
        return lm.lm(**lm.decoder_kwargs(states[None]), decoder_input_ids=_start(lm.lm)).logits[
            0, -1
        ]


def _fused_logits(kind, path, fused, video):
    with torch.inference_mode():
        inputs = _fused_inputs(kind, path, fused, video)
        return fused(**inputs, decoder_input_ids=_start(fused)).logits[0, -1]


@pytest.mark.parametrize(("seed", "frames"), [(0, 4), (1, 7)])
def test_split_generate_equals_fused_generate(halves, seed, frames):
    kind, enc, lm, fused, path = halves
    video = _video(seed, frames=frames)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    assert set(encoded) == {"encoder_hidden_states"}
    [split] = lm.generate([GenRequest(encoded, PROMPT)], GenerationConfig(max_new_tokens=12))
    with torch.inference_mode():
        ref = fused.generate(
            **_fused_inputs(kind, path, fused, video), max_new_tokens=12, do_sample=False
        )
    ref_tokens = ref[0, 1:].tolist()
    eos = fused.generation_config.eos_token_id
    ref_tokens = ref_tokens[: ref_tokens.index(eos)] if eos in ref_tokens else ref_tokens
    assert ref_tokens and list(split.token_ids) == ref_tokens


def test_first_step_logits_match_and_depend_on_the_frames(halves):
    kind, enc, lm, fused, path = halves
    video = _video(3)
    states = enc.encode([FramesInput(video, FPS)])[0]["encoder_hidden_states"]
    rows = {"clip": 4 * (1 + 2 * 2), "videomae": 2 * 2 * 2, "timesformer": 1 + 4 * 2 * 2}[kind]
    assert states.shape == (rows, fused.config.encoder.hidden_size)
    ref = _fused_logits(kind, path, fused, video)
    torch.testing.assert_close(_split_logits(lm, states), ref, rtol=1e-4, atol=1e-4)
    assert (_split_logits(lm, torch.zeros_like(states)) - ref).abs().max() > 1e-2
    other = enc.encode([FramesInput(np.concatenate([video[:2], _video(9, frames=2)]), FPS)])[0]
    assert (_split_logits(lm, other["encoder_hidden_states"]) - ref).abs().max() > 1e-2
    # Reversing the frames: the video encoders' position embeddings see it; CLIP + GPT-2
    # cross-attends over an unordered set of frame tokens, so it cannot (documented).
    reversed_states = enc.encode([FramesInput(video[::-1].copy(), FPS)])[0]["encoder_hidden_states"]
    diff = (_split_logits(lm, reversed_states) - ref).abs().max()
    assert diff < 1e-4 if kind == "clip" else diff > 1e-2


def test_batched_generation_equals_one_by_one(halves):
    _, enc, lm, _, _ = halves
    videos = [_video(5), _video(6, frames=6, h=40, w=72), _video(7)]
    encoded = enc.encode([FramesInput(v, FPS) for v in videos])
    singles = [enc.encode([FramesInput(v, FPS)])[0] for v in videos]
    for a, b in zip(encoded, singles, strict=True):
        torch.testing.assert_close(a["encoder_hidden_states"], b["encoder_hidden_states"])
    settings = GenerationConfig(max_new_tokens=8)
    together = lm.generate([GenRequest(e, PROMPT) for e in encoded], settings)
    alone = [lm.generate([GenRequest(e, PROMPT)], settings)[0] for e in singles]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert len({o.token_ids for o in together}) > 1  # the captions follow the pixels


def test_each_half_loads_only_its_weights(halves):
    _, enc, lm, fused, _ = halves
    assert not list(lm.lm.encoder.parameters())
    n_enc = sum(p.numel() for p in enc.encoder.parameters())
    n_lm = sum(p.numel() for p in lm.lm.parameters())
    assert n_enc + n_lm == sum(p.numel() for p in fused.parameters())


def test_too_many_new_tokens_is_an_item_error(halves):
    _, enc, lm, _, _ = halves
    encoded = enc.encode([FramesInput(_video(0), FPS)])[0]
    [err] = lm.generate(
        [GenRequest(encoded, PROMPT)], GenerationConfig(max_new_tokens=lm.max_positions)
    )
    assert isinstance(err, StageError) and err.code is ErrorCode.PROMPT_TOO_LONG
