"""SmolVLM2 split == fused: frame rows + timestamped prompt reproduce HF's fused generate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.video_utils import VideoMetadata

from pipelines.core.config import GenerationConfig
from pipelines.models import resolve_family, tiny_cases
from pipelines.models.base import FramesInput, GenRequest
from pipelines.models.smolvlm import SmolVLM
from tests.unit.models.split_helpers import (
    check_prompt_errors_are_item_errors,
    load_halves,
    random_video,
)

PROMPT = "Describe this video."
FPS = 2.0
MODEL_TYPES = ("smolvlm",)


def _video(seed: int, frames: int = 4, h: int = 112, w: int = 112) -> np.ndarray:
    return random_video(seed, frames, h, w)


@pytest.fixture(scope="module", params=tiny_cases(*MODEL_TYPES), ids=lambda c: c.id)
def halves(request, tiny_model_dir):
    path = tiny_model_dir(request.param.model_type, **request.param.kwargs)
    cls, model_type = resolve_family(path)
    assert cls is SmolVLM and model_type == "smolvlm"
    enc, lm = load_halves(cls, path)
    proc = AutoProcessor.from_pretrained(path)
    fused = AutoModelForImageTextToText.from_pretrained(path).eval()
    return enc, lm, proc, fused


def _fused_inputs(proc, video, fps=FPS):
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    n = len(video)
    meta = VideoMetadata(
        total_num_frames=n, fps=fps, duration=n / fps, frames_indices=list(range(n))
    )
    return proc(
        text=[text],
        videos=[video],
        return_tensors="pt",
        do_sample_frames=False,
        video_metadata=[meta],
    )


def _split_kwargs(lm, encoded, embeds=None):
    req = GenRequest({**encoded, **({} if embeds is None else {"image_embeds": embeds})}, PROMPT)
    return lm.generate_kwargs([req], [lm.request_text(req)])


def _first_logits(lm, encoded, embeds):
    with torch.inference_mode():
        return lm.lm(**_split_kwargs(lm, encoded, embeds)).logits[0, -1]


@pytest.mark.parametrize(("seed", "frames", "fps"), [(0, 4, FPS), (1, 6, 0.5)])
def test_split_generate_equals_fused_generate(halves, seed, frames, fps):
    enc, lm, proc, fused = halves
    video = _video(seed, frames=frames)
    encoded = enc.encode([FramesInput(video, fps)])[0]
    assert set(encoded) == {"image_embeds", "frame_ts_s", "duration_s"}
    [split] = lm.generate([GenRequest(encoded, PROMPT)], GenerationConfig(max_new_tokens=12))
    inputs = _fused_inputs(proc, video, fps)
    with torch.inference_mode():
        ref = fused.generate(**inputs, max_new_tokens=12, do_sample=False)
    ref_tokens = ref[0, inputs["input_ids"].shape[1] :].tolist()
    eos = fused.generation_config.eos_token_id
    ref_tokens = ref_tokens[: ref_tokens.index(eos)] if eos in ref_tokens else ref_tokens
    assert list(split.token_ids) == ref_tokens
    assert split.prompt_tokens == inputs["input_ids"].shape[1]
    # Same text as the processor: intro, "Frame from MM:SS:" lines, image blocks.
    assert _split_kwargs(lm, encoded)["input_ids"].tolist() == inputs["input_ids"].tolist()


def test_first_step_logits_match_and_depend_on_the_embeddings(halves):
    enc, lm, proc, fused = halves
    video = _video(3)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    embeds = encoded["image_embeds"]
    # 4 frames x (64 px / 16 px patches = 16, pixel-shuffled by 2x2 -> 4 rows).
    assert embeds.shape == (4 * 4, fused.config.text_config.hidden_size)
    with torch.inference_mode():
        ref = fused(**_fused_inputs(proc, video)).logits[0, -1]
    torch.testing.assert_close(_first_logits(lm, encoded, embeds), ref, rtol=1e-4, atol=1e-4)
    for changed in (torch.zeros_like(embeds), embeds.roll(4, dims=0), embeds.flip(0)):
        assert (_first_logits(lm, encoded, changed) - ref).abs().max() > 1e-2


def test_batched_generation_equals_one_by_one(halves):
    enc, lm, _, _ = halves
    videos = [_video(5), _video(6, frames=6, h=84, w=140)]
    encoded = enc.encode([FramesInput(v, FPS) for v in videos])
    singles = [enc.encode([FramesInput(v, FPS)])[0] for v in videos]
    for a, b in zip(encoded, singles, strict=True):
        torch.testing.assert_close(a["image_embeds"], b["image_embeds"])
        assert a["frame_ts_s"].tolist() == b["frame_ts_s"].tolist()
    settings = GenerationConfig(max_new_tokens=8)
    together = lm.generate([GenRequest(e, PROMPT) for e in encoded], settings)
    alone = [lm.generate([GenRequest(e, PROMPT)], settings)[0] for e in singles]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert together[0].token_ids != together[1].token_ids


def test_each_half_loads_only_its_weights(halves):
    enc, lm, _, fused = halves
    assert enc.visual_model.text_model is None
    assert lm.lm.model.vision_model is None and lm.lm.model.connector is None
    n_enc = sum(p.numel() for p in enc.visual_model.parameters())
    n_lm = sum(p.numel() for p in lm.lm.parameters())
    assert n_enc + n_lm == sum(p.numel() for p in fused.parameters())


def test_prompt_errors_are_item_errors_beside_good_items(halves):
    enc, lm, _, _ = halves
    check_prompt_errors_are_item_errors(enc, lm, FramesInput(_video(0), FPS), PROMPT)
