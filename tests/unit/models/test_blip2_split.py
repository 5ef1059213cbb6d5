"""BLIP-2 split == fused: per-frame Q-Former rows reproduce HF's fused generate over frames.

BLIP-2 has no video input, so the fused reference is one real ``generate`` on the full
model, written out here: the F frames as a batch of F images in ``pixel_values``, and one
prompt whose ids are F x num_query_tokens image tokens followed by the processor's ids for
the text (which already start with one frame's image tokens before the BOS). The fused
generate projects all F x Q query rows and scatters them into the image tokens in order.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Blip2ForConditionalGeneration

from pipelines.core.config import GenerationConfig
from pipelines.models import resolve_family, tiny_cases
from pipelines.models.base import FramesInput, GenRequest
from pipelines.models.blip2 import Blip2
from tests.unit.models.split_helpers import (
    check_prompt_errors_are_item_errors,
    load_halves,
    random_video,
)

PROMPT = "Describe this video."
PROMPT_TEXT = "Question: Describe this video. Answer:"  # BLIP-2's documented QA format
FPS = 2.0
MODEL_TYPES = ("blip-2",)


def _video(seed: int, frames: int = 4, h: int = 48, w: int = 64) -> np.ndarray:
    return random_video(seed, frames, h, w)


@pytest.fixture(scope="module", params=tiny_cases(*MODEL_TYPES), ids=lambda c: c.id)
def halves(request, tiny_model_dir):
    path = tiny_model_dir(request.param.model_type, **request.param.kwargs)
    cls, model_type = resolve_family(path)
    assert cls is Blip2 and model_type == "blip-2"
    enc, lm = load_halves(cls, path)
    proc = AutoProcessor.from_pretrained(path)
    fused = Blip2ForConditionalGeneration.from_pretrained(path).eval()
    return enc, lm, proc, fused


def _fused_inputs(proc, fused, frames, text=PROMPT_TEXT):
    pixels = proc.image_processor(list(frames), return_tensors="pt")["pixel_values"]
    one = proc(images=list(frames[:1]), text=text, return_tensors="pt")["input_ids"]
    more = (len(frames) - 1) * fused.config.num_query_tokens
    ids = torch.cat([torch.full((1, more), fused.config.image_token_id), one], dim=1)
    return {"pixel_values": pixels, "input_ids": ids}


def _fused_tokens(proc, fused, frames, text=PROMPT_TEXT, max_new_tokens=12):
    inputs = _fused_inputs(proc, fused, frames, text)
    with torch.inference_mode():
        out = fused.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    eos = fused.language_model.generation_config.eos_token_id
    return (tokens[: tokens.index(eos)] if eos in tokens else tokens), inputs


def _split_logits(lm, rows, prompt=PROMPT):
    kwargs = lm.generate_kwargs([GenRequest({"query_embeds": rows}, prompt)], [])
    with torch.inference_mode():
        out = lm.lm(inputs_embeds=kwargs["inputs_embeds"], attention_mask=kwargs["attention_mask"])
    return out.logits[0, -1]


@pytest.mark.parametrize(("seed", "frames", "prompt"), [(0, 4, PROMPT), (1, 7, PROMPT), (2, 3, "")])
def test_split_generate_equals_fused_generate(halves, seed, frames, prompt):
    enc, lm, proc, fused = halves
    video = _video(seed, frames=frames)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    assert set(encoded) == {"query_embeds"}
    [split] = lm.generate([GenRequest(encoded, prompt)], GenerationConfig(max_new_tokens=12))
    text = PROMPT_TEXT if prompt else ""  # empty prompt: plain captioning after the BOS
    ref_tokens, inputs = _fused_tokens(proc, fused, video, text)
    assert ref_tokens and list(split.token_ids) == ref_tokens
    assert split.prompt_tokens == inputs["input_ids"].shape[1]
    kwargs = lm.generate_kwargs([GenRequest(encoded, prompt)], [])
    assert kwargs["input_ids"].tolist() == inputs["input_ids"].tolist()


def test_first_step_logits_match_and_depend_on_the_rows(halves):
    enc, lm, proc, fused = halves
    video = _video(3)
    rows = enc.encode([FramesInput(video, FPS)])[0]["query_embeds"]
    q = fused.config.num_query_tokens
    assert rows.shape == (4 * q, fused.config.text_config.hidden_size)
    with torch.inference_mode():
        ref = fused(**_fused_inputs(proc, fused, video)).logits[0, -1]
    torch.testing.assert_close(_split_logits(lm, rows), ref, rtol=1e-4, atol=1e-4)
    # Zeroed rows, rows shifted by one frame, frames in reverse order.
    reversed_frames = rows.unflatten(0, (4, q)).flip(0).flatten(0, 1)
    for changed in (torch.zeros_like(rows), rows.roll(q, dims=0), reversed_frames):
        assert (_split_logits(lm, changed) - ref).abs().max() > 1e-2


def test_frames_over_the_budget_are_subsampled_uniformly(halves, monkeypatch):
    enc, lm, proc, fused = halves
    q = fused.config.num_query_tokens
    # The tiny LM's default budget: half of its 512 positions, 8 queries a frame -> 32 frames.
    assert enc.max_frames_tokens == 256 and len(enc.frame_indices(40)) == 32
    monkeypatch.setattr(enc, "max_frames_tokens", 3 * q + q // 2)  # room for 3 frames
    video = _video(4, frames=7)
    assert enc.frame_indices(7).tolist() == [0, 3, 6]
    assert enc.frame_indices(3).tolist() == [0, 1, 2]
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    assert encoded["query_embeds"].shape[0] == 3 * q
    [split] = lm.generate([GenRequest(encoded, PROMPT)], GenerationConfig(max_new_tokens=12))
    ref_tokens, _ = _fused_tokens(proc, fused, video[[0, 3, 6]])
    assert list(split.token_ids) == ref_tokens


def test_batched_generation_equals_one_by_one(halves):
    enc, lm, _, _ = halves
    videos = [_video(5), _video(6, frames=6, h=40, w=72), _video(7, frames=2)]
    prompts = [PROMPT, "What happens in the scene?", ""]
    encoded = enc.encode([FramesInput(v, FPS) for v in videos])
    singles = [enc.encode([FramesInput(v, FPS)])[0] for v in videos]
    for a, b in zip(encoded, singles, strict=True):
        torch.testing.assert_close(a["query_embeds"], b["query_embeds"])
    settings = GenerationConfig(max_new_tokens=8)
    together = lm.generate(
        [GenRequest(e, p) for e, p in zip(encoded, prompts, strict=True)], settings
    )
    alone = [
        lm.generate([GenRequest(e, p)], settings)[0] for e, p in zip(singles, prompts, strict=True)
    ]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert len({o.token_ids for o in together}) > 1


def test_each_half_loads_only_its_weights(halves):
    enc, lm, _, fused = halves
    assert enc.visual_model.language_model is None
    assert not hasattr(lm.lm, "qformer") and not hasattr(lm.lm, "vision_model")
    n_enc = sum(p.numel() for p in enc.visual_model.parameters())
    n_lm = sum(p.numel() for p in lm.lm.parameters())
    assert n_lm == sum(p.numel() for p in fused.language_model.parameters())
    assert n_enc + n_lm == sum(p.numel() for p in fused.parameters())


def test_prompt_errors_are_item_errors_beside_good_items(halves):
    enc, lm, _, _ = halves
    check_prompt_errors_are_item_errors(enc, lm, FramesInput(_video(0), FPS), PROMPT)
