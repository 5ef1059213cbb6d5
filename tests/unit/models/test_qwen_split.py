"""Split == fused: the two-stage path reproduces HF's fused generate token for token."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.video_utils import VideoMetadata

from pipelines.core.config import GenerationConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.models import (
    family_for_model_type,
    resolve_family,
    supported_model_types,
    tiny_cases,
)
from pipelines.models.base import FramesInput, GenRequest
from tests.unit.models.split_helpers import load_halves, random_video

PROMPT = "Describe this video."
FPS = 2.0
MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")


def _video(seed: int, frames: int = 4, h: int = 112, w: int = 112) -> np.ndarray:
    return random_video(seed, frames, h, w)


@pytest.fixture(scope="module", params=tiny_cases(*MODEL_TYPES), ids=lambda c: c.id)
def halves(request, tiny_model_dir):
    path = tiny_model_dir(request.param.model_type, **request.param.kwargs)
    cls, _ = resolve_family(path)
    enc, lm = load_halves(cls, path)
    proc = AutoProcessor.from_pretrained(path)
    fused = AutoModelForImageTextToText.from_pretrained(path).eval()
    return enc, lm, proc, fused


def _fused_inputs(proc, video, messages=None):
    messages = messages or [
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}
    ]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    meta = [VideoMetadata(total_num_frames=len(video), fps=FPS)]
    return proc(
        text=[text],
        videos=[video],
        return_tensors="pt",
        do_sample_frames=False,
        video_metadata=meta,
    )


def _split_kwargs(lm, encoded, embeds):
    text = lm.request_text(GenRequest({"video_embeds": embeds}, PROMPT))
    ids = lm.processor.tokenizer([text], return_tensors="pt")["input_ids"]
    kw = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": torch.tensor(lm.processor.create_mm_token_type_ids(ids.tolist())),
        "video_grid_thw": encoded["video_grid_thw"][None],
        "mm_encoder_outputs": {"video": BaseModelOutputWithPooling(pooler_output=(embeds,))},
    }
    if "second_per_grid_ts" in encoded:
        kw["second_per_grid_ts"] = encoded["second_per_grid_ts"]
    return kw


def _first_logits(lm, encoded, embeds):
    with torch.inference_mode():
        return lm.lm(**_split_kwargs(lm, encoded, embeds)).logits[0, -1]


@pytest.mark.parametrize("seed", [0, 1])
def test_split_generate_equals_fused_generate(halves, seed):
    enc, lm, proc, fused = halves
    video = _video(seed)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    [split] = lm.generate([GenRequest(encoded, PROMPT)], GenerationConfig(max_new_tokens=12))
    inputs = _fused_inputs(proc, video)
    with torch.inference_mode():
        ref = fused.generate(**inputs, max_new_tokens=12, do_sample=False)
    ref_tokens = ref[0, inputs["input_ids"].shape[1] :].tolist()
    eos = fused.generation_config.eos_token_id
    ref_tokens = ref_tokens[: ref_tokens.index(eos)] if eos in ref_tokens else ref_tokens
    assert list(split.token_ids) == ref_tokens
    assert split.prompt_tokens == inputs["input_ids"].shape[1]
    # The split prompt is token-identical to the processor's own expansion.
    kw = _split_kwargs(lm, encoded, encoded["video_embeds"])
    assert kw["input_ids"].tolist() == inputs["input_ids"].tolist()
    assert kw["mm_token_type_ids"].tolist() == inputs["mm_token_type_ids"].tolist()


def test_first_step_logits_match_and_depend_on_the_embeddings(halves):
    enc, lm, proc, fused = halves
    video = _video(3)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    embeds = encoded["video_embeds"]
    inputs = _fused_inputs(proc, video)
    with torch.inference_mode():
        ref = fused(**inputs).logits[0, -1]
    split = _first_logits(lm, encoded, embeds)
    torch.testing.assert_close(split, ref, rtol=1e-4, atol=1e-4)
    # Dropping, zeroing or shifting the visual tokens must show in the logits; otherwise
    # the parity above would prove nothing.
    for changed in (torch.zeros_like(embeds), embeds.roll(1, dims=0), embeds.flip(0)):
        assert (_first_logits(lm, encoded, changed) - ref).abs().max() > 1e-2


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
    # Different videos give different text: the output depends on the pixels.
    assert together[0].token_ids != together[1].token_ids


def test_each_half_loads_only_its_weights(halves):
    enc, lm, _, fused = halves
    assert enc.visual_model.language_model is None
    assert lm.lm.model.visual is None
    n_enc = sum(p.numel() for p in enc.visual_model.parameters())
    n_lm = sum(p.numel() for p in lm.lm.parameters())
    n_all = sum(p.numel() for p in fused.parameters())
    assert n_enc + n_lm == n_all


def test_prompt_too_long_is_an_item_error_beside_good_items(halves):
    enc, lm, _, _ = halves
    encoded = enc.encode([FramesInput(_video(0), FPS)])[0]
    too_long = "word " * lm.max_positions
    ok, err = lm.generate(
        [GenRequest(encoded, PROMPT), GenRequest(encoded, too_long)],
        GenerationConfig(max_new_tokens=4),
    )
    assert not isinstance(ok, StageError) and ok.token_ids
    assert isinstance(err, StageError) and err.code is ErrorCode.PROMPT_TOO_LONG


def test_registry_lists_supported_types_for_unknown_model():
    assert {"qwen2_vl", "qwen2_5_vl"} <= set(supported_model_types())
    with pytest.raises(ValueError, match="not supported; supported: .*qwen2_vl"):
        family_for_model_type("gpt2")


def test_unsupported_local_model_fails_at_resolve(tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'gpt2' is not supported"):
        resolve_family(str(tmp_path))


def _fused_tokens(fused, inputs, max_new_tokens):
    with torch.inference_mode():
        ref = fused.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    tokens = ref[0, inputs["input_ids"].shape[1] :].tolist()
    eos = fused.generation_config.eos_token_id
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def test_follow_up_turn_equals_fused_generate_on_the_whole_conversation(halves):
    enc, lm, proc, fused = halves
    video = _video(7)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    history = (("What is shown?", "Moving squares."), ("Which colour?", "Mostly red."))
    request = GenRequest(encoded, "What happens next?", history)
    [split] = lm.generate([request], GenerationConfig(max_new_tokens=10))

    def text(t):
        return {"type": "text", "text": t}

    messages = [
        {"role": "user", "content": [{"type": "video"}, text("What is shown?")]},
        {"role": "assistant", "content": [text("Moving squares.")]},
        {"role": "user", "content": [text("Which colour?")]},
        {"role": "assistant", "content": [text("Mostly red.")]},
        {"role": "user", "content": [text("What happens next?")]},
    ]
    inputs = _fused_inputs(proc, video, messages)
    assert list(split.token_ids) == _fused_tokens(fused, inputs, 10)
    assert split.prompt_tokens == inputs["input_ids"].shape[1]
    [alone] = lm.generate([GenRequest(encoded, "What happens next?")], GenerationConfig())
    assert alone.prompt_tokens < split.prompt_tokens  # the history is really in the prompt


def test_text_only_generation_equals_the_full_model(halves):
    _, lm, proc, fused = halves
    prompt = "Summarize: a ball rolls, then a cat jumps."
    [split] = lm.generate_text([prompt], GenerationConfig(max_new_tokens=10))
    messages = [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    inputs = proc(text=[text], return_tensors="pt")
    assert list(split.token_ids) == _fused_tokens(fused, inputs, 10)
