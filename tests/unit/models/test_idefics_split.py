"""IDEFICS split == fused: resampled frame latents reproduce HF's fused interleaved generate.

The fused reference is the model card's own call: the processor given
``["User:", *frames, prompt, "<end_of_utterance>", "\\nAssistant:"]`` and ``generate`` with
``<end_of_utterance>`` as a stop token and the image tokens banned.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, IdeficsForVisionText2Text

from pipelines.core.config import GenerationConfig
from pipelines.models import resolve_family, tiny_cases
from pipelines.models.base import FramesInput, GenRequest
from pipelines.models.idefics import Idefics
from tests.unit.models.split_helpers import (
    check_prompt_errors_are_item_errors,
    load_halves,
    random_video,
)

PROMPT = "Describe this video."
FPS = 2.0
MODEL_TYPES = ("idefics",)


def _video(seed: int, frames: int = 4, h: int = 48, w: int = 64) -> np.ndarray:
    return random_video(seed, frames, h, w)


@pytest.fixture(scope="module", params=tiny_cases(*MODEL_TYPES), ids=lambda c: c.id)
def halves(request, tiny_model_dir):
    path = tiny_model_dir(request.param.model_type, **request.param.kwargs)
    cls, model_type = resolve_family(path)
    assert cls is Idefics and model_type == "idefics"
    enc, lm = load_halves(cls, path)
    proc = AutoProcessor.from_pretrained(path)
    fused = IdeficsForVisionText2Text.from_pretrained(path).eval()
    return enc, lm, proc, fused


def _fused_inputs(proc, video, prompt=PROMPT):
    prompts = [["User:", *list(video), prompt, "<end_of_utterance>", "\nAssistant:"]]
    return proc(text=prompts, add_end_of_utterance_token=False, return_tensors="pt")


def _fused_tokens(proc, fused, video, max_new_tokens=12):
    tok = proc.tokenizer
    stop = [tok.eos_token_id, tok.convert_tokens_to_ids("<end_of_utterance>")]
    banned = [[tok.convert_tokens_to_ids(t)] for t in ("<image>", "<fake_token_around_image>")]
    inputs = _fused_inputs(proc, video)
    with torch.inference_mode():
        out = fused.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=stop,
            bad_words_ids=banned,
        )
    tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    # A row ends at its first stop or pad token (pad is how batched generation ends rows).
    ends = [i for i, t in enumerate(tokens) if t in {*stop, tok.pad_token_id}]
    return tokens[: ends[0]] if ends else tokens, inputs


def _split_kwargs(lm, rows, prompt=PROMPT):
    req = GenRequest({"image_hidden_states": rows}, prompt)
    return lm.generate_kwargs([req], [lm.request_text(req)])


def _split_logits(lm, rows):
    with torch.inference_mode():
        return lm.lm(**_split_kwargs(lm, rows)).logits[0, -1]


@pytest.mark.parametrize(("seed", "frames"), [(4, 4), (5, 6), (6, 1)])
def test_split_generate_equals_fused_generate(halves, seed, frames):
    enc, lm, proc, fused = halves
    video = _video(seed, frames=frames)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    assert set(encoded) == {"image_hidden_states"}
    [split] = lm.generate([GenRequest(encoded, PROMPT)], GenerationConfig(max_new_tokens=12))
    ref_tokens, inputs = _fused_tokens(proc, fused, video)
    assert len(ref_tokens) > 2 and list(split.token_ids) == ref_tokens
    assert split.prompt_tokens == inputs["input_ids"].shape[1]
    # Same ids and the same token -> image mask as the processor.
    kwargs = _split_kwargs(lm, encoded["image_hidden_states"])
    assert kwargs["input_ids"].tolist() == inputs["input_ids"].tolist()
    assert torch.equal(kwargs["image_attention_mask"], inputs["image_attention_mask"])


def test_first_step_logits_match_and_depend_on_the_rows(halves):
    enc, lm, proc, fused = halves
    video = _video(4)
    rows = enc.encode([FramesInput(video, FPS)])[0]["image_hidden_states"]
    perceiver = fused.config.perceiver_config
    assert rows.shape == (4, perceiver.resampler_n_latents, fused.config.vision_config.embed_dim)
    with torch.inference_mode():
        ref = fused(**_fused_inputs(proc, video)).logits[0, -1]
    torch.testing.assert_close(_split_logits(lm, rows), ref, rtol=1e-4, atol=1e-4)
    # Zeroed rows, frames shifted by one, frames reversed.
    for changed in (torch.zeros_like(rows), rows.roll(1, dims=0), rows.flip(0)):
        assert (_split_logits(lm, changed) - ref).abs().max() > 1e-2


def test_fused_generate_cannot_take_resampled_rows(halves):
    """Why the LM half passes latents as image_encoder_embeddings (see the module doc)."""
    enc, _, proc, fused = halves
    video = _video(4, frames=2)
    rows = enc.encode([FramesInput(video, FPS)])[0]["image_hidden_states"]
    inputs = _fused_inputs(proc, video)
    del inputs["pixel_values"]
    with torch.inference_mode():  # the first step takes them...
        fused.generate(**inputs, perceiver_embeddings=rows, max_new_tokens=1)
        with pytest.raises(ValueError, match="Exactly 1 of"):  # ...the second refuses
            fused.generate(**inputs, perceiver_embeddings=rows, max_new_tokens=2)


def test_batched_generation_equals_one_by_one(halves):
    enc, lm, _, _ = halves
    videos = [_video(5), _video(6, frames=6, h=40, w=72), _video(7, frames=2)]
    prompts = [PROMPT, "What happens in the scene?", PROMPT]
    encoded = enc.encode([FramesInput(v, FPS) for v in videos])
    singles = [enc.encode([FramesInput(v, FPS)])[0] for v in videos]
    for a, b in zip(encoded, singles, strict=True):
        torch.testing.assert_close(a["image_hidden_states"], b["image_hidden_states"])
    settings = GenerationConfig(max_new_tokens=8)
    pairs = list(zip(encoded, prompts, strict=True))
    together = lm.generate([GenRequest(e, p) for e, p in pairs], settings)
    alone = [lm.generate([GenRequest(e, p)], settings)[0] for e, p in pairs]
    assert [o.token_ids for o in together] == [o.token_ids for o in alone]
    assert len({o.token_ids for o in together}) > 1


def test_each_half_loads_only_its_weights(halves):
    enc, lm, _, fused = halves
    assert lm.lm.model.vision_model is None and not hasattr(lm.lm.model, "perceiver_resampler")
    n_enc = sum(p.numel() for m in (enc.vision_model, enc.resampler) for p in m.parameters())
    n_lm = sum(p.numel() for p in lm.lm.parameters())
    assert n_enc + n_lm == sum(p.numel() for p in fused.parameters())


def test_prompt_errors_are_item_errors_beside_good_items(halves):
    enc, lm, _, _ = halves
    check_prompt_errors_are_item_errors(enc, lm, FramesInput(_video(0), FPS), PROMPT)
