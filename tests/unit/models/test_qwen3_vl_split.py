"""Qwen3-VL split == fused: rows + deepstack features + timestamped prompt reproduce HF."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.video_utils import VideoMetadata

from pipelines.core.config import GenerationConfig
from pipelines.models import resolve_family, tiny_cases
from pipelines.models.base import FramesInput, GenRequest
from pipelines.models.qwen3_vl import Qwen3VL
from tests.unit.models.split_helpers import (
    check_prompt_errors_are_item_errors,
    load_halves,
    random_video,
)

PROMPT = "Describe this video."
FPS = 2.0
MODEL_TYPES = ("qwen3_vl",)


def _video(seed: int, frames: int = 4, h: int = 112, w: int = 112) -> np.ndarray:
    return random_video(seed, frames, h, w)


@pytest.fixture(scope="module", params=tiny_cases(*MODEL_TYPES), ids=lambda c: c.id)
def halves(request, tiny_model_dir):
    path = tiny_model_dir(request.param.model_type, **request.param.kwargs)
    cls, model_type = resolve_family(path)
    assert cls is Qwen3VL and model_type == "qwen3_vl"
    enc, lm = load_halves(cls, path)
    proc = AutoProcessor.from_pretrained(path)
    fused = AutoModelForImageTextToText.from_pretrained(path).eval()
    return enc, lm, proc, fused


def _fused_inputs(proc, video, fps=FPS):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    n = len(video)
    meta = VideoMetadata(total_num_frames=n, fps=fps, frames_indices=list(range(n)))
    return proc(
        text=[text],
        videos=[video],
        return_tensors="pt",
        do_sample_frames=False,
        video_metadata=[meta],
    )


def _with(encoded, **changes):
    return {**encoded, **changes}


def _first_logits(lm, encoded):
    req = GenRequest(encoded, PROMPT)
    with torch.inference_mode():
        return lm.lm(**lm.generate_kwargs([req], [lm.request_text(req)])).logits[0, -1]


@pytest.mark.parametrize(("seed", "frames", "fps"), [(0, 4, FPS), (1, 5, 0.5)])
def test_split_generate_equals_fused_generate(halves, seed, frames, fps):
    enc, lm, proc, fused = halves
    video = _video(seed, frames=frames)
    encoded = enc.encode([FramesInput(video, fps)])[0]
    assert set(encoded) == {"video_embeds", "deepstack_embeds", "video_grid_thw", "frame_ts_s"}
    [split] = lm.generate([GenRequest(encoded, PROMPT)], GenerationConfig(max_new_tokens=12))
    inputs = _fused_inputs(proc, video, fps)
    with torch.inference_mode():
        ref = fused.generate(**inputs, max_new_tokens=12, do_sample=False)
    ref_tokens = ref[0, inputs["input_ids"].shape[1] :].tolist()
    eos = fused.generation_config.eos_token_id
    ref_tokens = ref_tokens[: ref_tokens.index(eos)] if eos in ref_tokens else ref_tokens
    assert ref_tokens and list(split.token_ids) == ref_tokens
    assert split.prompt_tokens == inputs["input_ids"].shape[1]
    # Same text as the processor, "<t seconds>" stamps included (odd counts padded).
    req = GenRequest(encoded, PROMPT)
    kwargs = lm.generate_kwargs([req], [lm.request_text(req)])
    assert kwargs["input_ids"].tolist() == inputs["input_ids"].tolist()


def test_first_step_logits_match_and_depend_on_rows_and_deepstack(halves):
    enc, lm, proc, fused = halves
    video = _video(3)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    embeds, deepstack = encoded["video_embeds"], encoded["deepstack_embeds"]
    layers = len(fused.config.vision_config.deepstack_visual_indexes)
    # 4 frames at 112 px -> 128 px: 2 temporal groups x (8 x 8 patches / 2x2 merge) rows.
    assert embeds.shape == (2 * 16, fused.config.text_config.hidden_size)
    assert deepstack.shape == (layers, *embeds.shape)
    with torch.inference_mode():
        ref = fused(**_fused_inputs(proc, video)).logits[0, -1]
    torch.testing.assert_close(_first_logits(lm, encoded), ref, rtol=1e-4, atol=1e-4)
    changed = [
        _with(encoded, video_embeds=torch.zeros_like(embeds)),
        _with(encoded, video_embeds=embeds.roll(16, dims=0)),  # frame groups swapped
        _with(encoded, deepstack_embeds=torch.zeros_like(deepstack)),  # deepstack dropped
        _with(encoded, deepstack_embeds=deepstack.roll(16, dims=1)),
    ]
    for other in changed:
        assert (_first_logits(lm, other) - ref).abs().max() > 1e-2


def test_batched_generation_equals_one_by_one(halves):
    enc, lm, _, _ = halves
    videos = [_video(5), _video(6, frames=6, h=84, w=140)]
    encoded = enc.encode([FramesInput(v, FPS) for v in videos])
    singles = [enc.encode([FramesInput(v, FPS)])[0] for v in videos]
    for a, b in zip(encoded, singles, strict=True):
        for key in a:
            torch.testing.assert_close(a[key], b[key])
    settings = GenerationConfig(max_new_tokens=8)
    together = lm.generate([GenRequest(e, PROMPT) for e in encoded], settings)
    alone = [lm.generate([GenRequest(e, PROMPT)], settings)[0] for e in singles]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert together[0].token_ids != together[1].token_ids


def test_each_half_loads_only_its_weights(halves):
    enc, lm, _, fused = halves
    assert enc.visual_model.language_model is None and lm.lm.model.visual is None
    n_enc = sum(p.numel() for p in enc.visual_model.parameters())
    n_lm = sum(p.numel() for p in lm.lm.parameters())
    assert n_enc + n_lm == sum(p.numel() for p in fused.parameters())


def test_prompt_errors_are_item_errors_beside_good_items(halves):
    enc, lm, _, _ = halves
    check_prompt_errors_are_item_errors(enc, lm, FramesInput(_video(0), FPS), PROMPT)
