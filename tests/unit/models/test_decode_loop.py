"""The faster decode loop options keep split == fused: a static KV cache gives the same tokens.

``compile`` (torch.compile on the static cache) is not run here: on this CPU its first
call compiles for ~90 s. By hand, on the tiny Qwen2-VL, it gave the same tokens as below
(and 0.9 s per later call); the GPU figures come from bench/gpu_check.py.
"""

from __future__ import annotations

import pytest
from transformers import AutoModelForImageTextToText, AutoProcessor

from pipelines.core.config import GenerationConfig
from pipelines.models import resolve_family, tiny_cases
from pipelines.models.base import FramesInput, GenRequest, decoding_kwargs
from tests.unit.models.split_helpers import load_halves, random_video
from tests.unit.models.test_qwen_split import FPS, PROMPT, _fused_inputs, _fused_tokens

STATIC = GenerationConfig(max_new_tokens=12, kv_cache="static")


@pytest.fixture(scope="module", params=tiny_cases("qwen2_vl"), ids=lambda c: c.id)
def halves(request, tiny_model_dir):
    path = tiny_model_dir(request.param.model_type, **request.param.kwargs)
    cls, _ = resolve_family(path)
    enc, lm = load_halves(cls, path)
    fused = AutoModelForImageTextToText.from_pretrained(path).eval()
    return enc, lm, AutoProcessor.from_pretrained(path), fused


def test_the_options_reach_generate():
    kw = decoding_kwargs(STATIC)
    assert kw["cache_implementation"] == "static" and kw["disable_compile"] is True
    compiled = decoding_kwargs(GenerationConfig(compile=True))  # implies the static cache
    assert compiled["cache_implementation"] == "static"
    assert compiled["disable_compile"] is False and compiled["compile_config"] is not None
    assert "cache_implementation" not in decoding_kwargs(GenerationConfig())


def test_lm_attention_is_sdpa(halves):
    _, lm, _, _ = halves
    assert lm.lm.config._attn_implementation == "sdpa"


@pytest.mark.parametrize("seed", [0, 1])
def test_split_with_a_static_cache_equals_fused_generate(halves, seed):
    enc, lm, proc, fused = halves
    video = random_video(seed)
    encoded = enc.encode([FramesInput(video, FPS)])[0]
    [split] = lm.generate([GenRequest(encoded, PROMPT)], STATIC)
    assert split.token_ids and list(split.token_ids) == _fused_tokens(
        fused, _fused_inputs(proc, video), 12
    )


def test_static_cache_batched_equals_one_by_one_and_the_dynamic_cache(halves):
    enc, lm, _, _ = halves
    # Different frame counts: different prompt lengths, so the batch is left-padded.
    videos = [random_video(5), random_video(6, frames=6, h=84, w=140)]
    encoded = enc.encode([FramesInput(v, FPS) for v in videos])
    requests = [GenRequest(e, PROMPT) for e in encoded]
    together = lm.generate(requests, STATIC)
    alone = [lm.generate([r], STATIC)[0] for r in requests]
    dynamic = lm.generate(requests, GenerationConfig(max_new_tokens=12))
    tokens = [o.token_ids for o in together]
    assert tokens == [o.token_ids for o in alone] == [o.token_ids for o in dynamic]
    assert tokens[0] != tokens[1]
