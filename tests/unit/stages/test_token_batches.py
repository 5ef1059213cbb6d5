"""LM batches by prompt length under a token budget: fewer pad tokens, same results, same order."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.config import GenerationConfig, ModelConfig, PoolConfig
from pipelines.core.errors import StageError
from pipelines.core.records import Ask, Clip, ClipRef
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GROUP_BATCHES, GenerateStage
from pipelines.stages.token_batches import PadCount, token_batches


def test_batches_group_similar_lengths_and_keep_every_index_once():
    lengths = [40, 300, 42, 310, 41, 305]
    batches = token_batches(lengths, max_rows=3)
    assert batches == [[0, 4, 2], [1, 5, 3]]
    before, after = PadCount(), PadCount()
    for b in token_batches(lengths, max_rows=3, by_length=False):
        before.add([lengths[i] for i in b])
    for b in batches:
        after.add([lengths[i] for i in b])
    assert after.fraction < 0.02 < 0.4 < before.fraction


def test_the_budget_bounds_rows_times_longest_plus_new_tokens():
    lengths = [10, 10, 10, 10, 50, 50, 50, 50]
    batches = token_batches(lengths, max_rows=8, budget=200, new_tokens=10)
    for b in batches:
        assert len(b) * (max(lengths[i] for i in b) + 10) <= 200
    # Short prompts fill a batch of their own; long ones go 3 to a batch.
    assert [len(b) for b in batches] == [4, 3, 1]
    assert sorted(i for b in batches for i in b) == list(range(8))


def test_a_request_over_the_budget_alone_still_gets_a_batch():
    assert token_batches([500, 5], max_rows=4, budget=100) == [[1], [0]]
    assert token_batches([], max_rows=4, budget=100) == []


def _clip(seed: int, frames: int) -> Clip:
    video = np.random.default_rng(seed).integers(0, 255, (frames, 112, 112, 3), dtype=np.uint8)
    ref = ClipRef(f"v{seed}", "s", (Ask("Describe."),), 0, 0.0, 2.0, (0.0,) * frames)
    return Clip(ref, video)


@pytest.fixture(scope="module")
def stages(tiny_model_dir):
    model = ModelConfig(model=tiny_model_dir("qwen2_vl"))
    enc = EncodeStage(model, PoolConfig(batch_size=8))
    enc.setup()
    return model, enc


def test_the_stage_returns_results_in_input_order_and_pads_less(stages):
    model, enc = stages
    # Clips of 4 and 8 frames (32 and 64 visual tokens) and prompts of very different
    # lengths, interleaved: arrival-order batches would mix them.
    encoded = enc([_clip(i, 4 if i % 2 else 8) for i in range(6)])
    prompts = ["Describe.", "Describe " + "the scene in detail, " * 12, "What moves?"]
    items = [
        type(e)(e.ref.for_ask(Ask(p, index=k)), e.encoded, e.encode_s)
        for e in encoded
        for k, p in enumerate(prompts)
    ]
    settings = GenerationConfig(max_new_tokens=4)
    grouped = GenerateStage(model, PoolConfig(batch_size=3, batch_tokens=10_000), settings)
    plain = GenerateStage(model, PoolConfig(batch_size=3), settings)
    plain.group_by_length = False
    grouped.setup()
    plain.family = grouped.family  # the same weights; only the batching differs
    assert grouped.batch_size == 3 * GROUP_BATCHES and plain.batch_size == 3
    a, b = grouped(items), plain(items)
    assert not any(isinstance(r, StageError) for r in a + b)
    # Same text for every item, in the items' order (the stage contract: one result each).
    assert [r.ref for r in a] == [i.ref for i in items]
    assert [(r.text, r.prompt_tokens) for r in a] == [(r.text, r.prompt_tokens) for r in b]
    assert grouped.pads.padded > 0
    assert grouped.pads.fraction < plain.pads.fraction
    assert grouped.pads.fraction < 0.1 < plain.pads.fraction
