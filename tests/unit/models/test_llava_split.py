"""LLaVA-OneVision and LLaVA-NeXT-Video: split (encoder rows + LM generate) == fused generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from pipelines.core.config import GenerationConfig
from pipelines.models import resolve_family, tiny_cases
from pipelines.models.base import FramesInput, GenRequest
from pipelines.models.llava_next_video import LlavaNextVideo
from pipelines.models.llava_onevision import LlavaOnevision
from tests.unit.models.split_helpers import (
    check_prompt_errors_are_item_errors,
    load_halves,
    random_video,
)

PROMPT = "Describe this video."
FPS = 2.0


def _video(seed: int, frames: int = 4, h: int = 112, w: int = 112) -> np.ndarray:
    return random_video(seed, frames, h, w)


FAMILIES = {"llava_onevision": LlavaOnevision, "llava_next_video": LlavaNextVideo}
MODEL_TYPES = tuple(sorted(FAMILIES))
# Tiny models: 4x4 patches per 56 px frame, pooled 2x2 -> 4 rows; OneVision adds a newline.
TRAILING_ROWS = {"llava_onevision": 1, "llava_next_video": 0}


@pytest.fixture(scope="module", params=tiny_cases(*MODEL_TYPES), ids=lambda c: c.id)
def halves(request, tiny_model_dir):
    case = request.param
    path = tiny_model_dir(case.model_type, **case.kwargs)
    cls, model_type = resolve_family(path)
    assert cls is FAMILIES[case.model_type] and model_type == case.model_type
    enc, lm = load_halves(cls, path)
    proc = AutoProcessor.from_pretrained(path)
    fused = AutoModelForImageTextToText.from_pretrained(path).eval()
    return enc, lm, proc, fused


def _fused_inputs(proc, video):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    return proc(text=[text], videos=[video], return_tensors="pt", do_sample_frames=False)


def _first_logits(lm, embeds):
    kw = lm.generate_kwargs([GenRequest({"video_embeds": embeds}, PROMPT)], [_text(lm, embeds)])
    with torch.inference_mode():
        return lm.lm(**kw).logits[0, -1]


def _text(lm, embeds):
    return lm.request_text(GenRequest({"video_embeds": embeds}, PROMPT))


@pytest.mark.parametrize("seed", [0, 1])
def test_split_generate_equals_fused_generate(halves, seed):
    enc, lm, proc, fused = halves
    video = _video(seed)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    assert set(encoded) == {"video_embeds"}
    [split] = lm.generate([GenRequest(encoded, PROMPT)], GenerationConfig(max_new_tokens=12))
    inputs = _fused_inputs(proc, video)
    with torch.inference_mode():
        ref = fused.generate(**inputs, max_new_tokens=12, do_sample=False)
    ref_tokens = ref[0, inputs["input_ids"].shape[1] :].tolist()
    eos = fused.generation_config.eos_token_id
    ref_tokens = ref_tokens[: ref_tokens.index(eos)] if eos in ref_tokens else ref_tokens
    assert list(split.token_ids) == ref_tokens
    assert split.prompt_tokens == inputs["input_ids"].shape[1]
    # The split prompt is token-identical to the processor's own placeholder expansion.
    kw = lm.generate_kwargs([GenRequest(encoded, PROMPT)], [_text(lm, encoded["video_embeds"])])
    assert kw["input_ids"].tolist() == inputs["input_ids"].tolist()


def test_first_step_logits_match_and_depend_on_the_embeddings(halves):
    enc, lm, proc, fused = halves
    video = _video(3)
    embeds = enc.encode([FramesInput(video, FPS)])[0]["video_embeds"]
    # 4 frames x (56 px / 14 px patches = 4x4, pooled 2x2) (+ 1 newline row).
    rows = 4 * 4 + TRAILING_ROWS[fused.config.model_type]
    assert embeds.shape == (rows, fused.config.text_config.hidden_size)
    with torch.inference_mode():
        ref = fused(**_fused_inputs(proc, video)).logits[0, -1]
    torch.testing.assert_close(_first_logits(lm, embeds), ref, rtol=1e-4, atol=1e-4)
    # Zeroing, shifting or reversing the visual rows must show in the logits; otherwise the
    # parity above would prove nothing.
    for changed in (torch.zeros_like(embeds), embeds.roll(1, dims=0), embeds.flip(0)):
        assert (_first_logits(lm, changed) - ref).abs().max() > 1e-2


def test_batched_generation_equals_one_by_one(halves):
    enc, lm, _, _ = halves
    videos = [_video(5), _video(6, frames=6, h=84, w=140)]
    encoded = enc.encode([FramesInput(v, FPS) for v in videos])
    singles = [enc.encode([FramesInput(v, FPS)])[0] for v in videos]
    for a, b in zip(encoded, singles, strict=True):
        torch.testing.assert_close(a["video_embeds"], b["video_embeds"])
    settings = GenerationConfig(max_new_tokens=8)
    together = lm.generate([GenRequest(e, PROMPT) for e in encoded], settings)
    alone = [lm.generate([GenRequest(e, PROMPT)], settings)[0] for e in singles]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert together[0].token_ids != together[1].token_ids


def test_each_half_loads_only_its_weights(halves):
    enc, lm, _, fused = halves
    assert enc.visual_model.language_model is None
    for name in ("vision_tower", "multi_modal_projector", "image_newline"):
        assert getattr(lm.lm.model, name) is None
    n_enc = sum(p.numel() for p in enc.visual_model.parameters())
    n_lm = sum(p.numel() for p in lm.lm.parameters())
    assert n_enc + n_lm == sum(p.numel() for p in fused.parameters())


def test_prompt_errors_are_item_errors_beside_good_items(halves):
    enc, lm, _, _ = halves
    check_prompt_errors_are_item_errors(enc, lm, FramesInput(_video(0), FPS), PROMPT)
