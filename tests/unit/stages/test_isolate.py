"""Which exceptions become per-item error rows and which propagate (pipelines/stages/isolate.py).

Per item: only an ``ItemError``, raised where family code knows the input is at fault.
Propagating: out of memory and accelerator faults (the worker's), and every other exception
(a bug). The stage-level tests run the real encoder stage on a tiny Qwen2-VL.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipelines.core.config import ModelConfig, PoolConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.records import Ask, Clip, ClipRef, EncodedClip
from pipelines.models.base import ItemError, rejected_inputs
from pipelines.models.qwen2_vl import QwenVL
from pipelines.stages.encode import EncodeStage
from pipelines.stages.isolate import FATAL, run_isolated

BAD = -1


def model_of(items):
    """A batch function with the family contract: one result per item, refusing BAD."""
    with rejected_inputs("test processor"):
        if BAD in items:
            raise ValueError(f"cannot take {BAD}")
    return [item * 10 for item in items]


def test_a_bad_item_in_a_batch_of_four_is_one_error_row_beside_three_results():
    calls = []

    def fn(items):
        calls.append(list(items))
        return model_of(items)

    out = run_isolated(fn, [1, 2, BAD, 4], "encode")
    assert out[0] == 10 and out[1] == 20 and out[3] == 40
    assert isinstance(out[2], StageError)
    assert (out[2].code, out[2].stage) == (ErrorCode.MODEL_ERROR, "encode")
    assert out[2].message == "test processor: cannot take -1"
    assert calls == [[1, 2, BAD, 4], [1], [2], [BAD], [4]]  # one batch try, then one by one


def test_an_item_error_keeps_its_code():
    def fn(items):
        raise ItemError(ErrorCode.PROMPT_TOO_LONG, "too long")

    [err] = run_isolated(fn, ["x"], "generate")
    assert (err.code, err.message, err.stage) == (ErrorCode.PROMPT_TOO_LONG, "too long", "generate")


@pytest.mark.parametrize(
    "exc",
    [
        TypeError("unsupported operand"),
        AttributeError("'NoneType' object has no attribute 'shape'"),
        KeyError("video_embeds"),
        # Outside ``rejected_inputs`` these are bugs too: they used to become model_error rows.
        ValueError("too many values to unpack"),
        IndexError("list index out of range"),
        RuntimeError("shape mismatch"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bugs_propagate_from_a_batch_and_from_a_single_item(exc):
    calls = []

    def fn(items):
        calls.append(len(items))
        raise exc

    for batch in ([1, 2, 3, 4], [1]):
        with pytest.raises(type(exc)):
            run_isolated(fn, batch, "encode")
    assert calls == [4, 1]  # no retry item by item: a bug is not the items' fault


@pytest.mark.parametrize(
    "exc",
    [
        torch.OutOfMemoryError("CUDA out of memory"),
        MemoryError(),
        torch.AcceleratorError("CUDA error: an illegal memory access was encountered"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_worker_faults_propagate_by_type(exc):
    assert isinstance(exc, FATAL)

    def fn(items):
        raise exc

    with pytest.raises(type(exc)):
        run_isolated(fn, [1, 2], "generate")


def test_the_message_does_not_decide_what_is_fatal():
    # An item refused with "CUDA" in its text is still only that item's error.
    def fn(items):
        if "CUDA" in items:
            raise ItemError(ErrorCode.MODEL_ERROR, "prompt mentions CUDA")
        return list(items)

    assert run_isolated(fn, ["a", "CUDA"], "generate")[0] == "a"


# -- the real encoder stage ----------------------------------------------------------------


def clip(i: int, frames: np.ndarray) -> Clip:
    n = len(frames)
    ref = ClipRef(f"v{i}", f"v{i}.mp4", (Ask("Describe."),), 0, 0.0, n / 2.0, (0.0,) * n, last=True)
    return Clip(ref, frames)


def frames(seed: int, h: int = 112, w: int = 112) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, size=(4, h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def qwen(tiny_model_dir):
    return ModelConfig(model=tiny_model_dir("qwen2_vl"))


def test_encode_stage_a_refused_clip_is_one_row_beside_three_encoded(qwen):
    stage = EncodeStage(qwen, PoolConfig(batch_size=4))
    stage.setup()
    # Qwen's processor refuses an aspect ratio over 200: this clip's input is at fault.
    items = [
        clip(0, frames(0)),
        clip(1, frames(1)),
        clip(2, frames(2, 28, 6000)),
        clip(3, frames(3)),
    ]
    out = stage.process_batch(items)
    assert [type(o) for o in out] == [EncodedClip, EncodedClip, StageError, EncodedClip]
    assert [o.ref for o in out if isinstance(o, EncodedClip)] == [items[i].ref for i in (0, 1, 3)]
    assert out[2].code is ErrorCode.MODEL_ERROR and "aspect ratio" in out[2].message


class MisnamedEncode(QwenVL):
    """Qwen2-VL with a bug in its encoder half: it hands frames where clips are expected."""

    model_type = "qwen2_vl-misnamed"  # never registered
    docs = ()

    def encode(self, clips):
        return super().encode([c.frames for c in clips])


def test_encode_stage_a_bug_in_family_code_propagates(qwen):
    stage = EncodeStage(qwen, PoolConfig(batch_size=4))
    stage.family = MisnamedEncode(qwen)
    stage.family.load_encoder()
    with pytest.raises(AttributeError, match="frames"):
        stage.process_batch([clip(0, frames(0)), clip(1, frames(1))])


def test_a_model_stage_used_before_setup_says_so(qwen):
    stage = EncodeStage(qwen, PoolConfig(batch_size=4))
    with pytest.raises(RuntimeError, match=r"stage 'encode' has no model loaded: call setup\(\)"):
        stage.process_batch([clip(0, frames(0))])
