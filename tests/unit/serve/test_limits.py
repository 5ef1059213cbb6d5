"""Per-request limits: typed config, the running decode budget, the chat caps."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from pipelines.core.errors import ErrorCode
from pipelines.core.records import Ask, Clip, ClipRef
from serve.config import RequestLimits, ServeConfig
from serve.errors import RequestError
from serve.limits import DecodeBudget, check_chat
from serve.openai_api import ChatRequest


def test_online_decode_budget_must_fit_inside_the_request_timeout():
    assert ServeConfig().decode.timeout_s < ServeConfig().request_timeout_s
    with pytest.raises(ValidationError, match="decode.timeout_s"):
        ServeConfig(decode={"timeout_s": 600})
    with pytest.raises(ValidationError, match="fetch_timeout_s"):
        ServeConfig(request_timeout_s=10, decode={"timeout_s": 5})
    with pytest.raises(ValidationError, match="limits.max_tokens"):
        ServeConfig(generation={"max_new_tokens": 512}, limits={"max_tokens": 256})
    with pytest.raises(ValidationError):
        RequestLimits(image_formats=("TIFF",))
    with pytest.raises(ValidationError):
        RequestLimits(max_clips=0)


def _clip(frames: int) -> Clip:
    ref = ClipRef("v", "v", (Ask("p"),), 0, 0.0, 1.0)
    return Clip(ref, np.zeros((frames, 8, 8, 3), np.uint8), 0.0)


@pytest.mark.parametrize(
    "limits, clips, name",
    [
        ({"max_clips": 2}, [1, 1, 1], "limits.max_clips"),
        ({"max_frames": 5}, [4, 4], "limits.max_frames"),
        ({"max_decoded_bytes": 1024**2, "max_frames": 10**6}, [6000], "limits.max_decoded_bytes"),
    ],
)
def test_decode_budget_refuses_at_the_first_clip_over_a_limit(limits, clips, name):
    budget = DecodeBudget(RequestLimits(**limits))
    with pytest.raises(RequestError) as err:
        for frames in clips:
            budget.add(_clip(frames))
    assert (err.value.code, err.value.status, err.value.param) == (
        ErrorCode.LIMIT_EXCEEDED,
        413,
        name,
    )
    assert name in err.value.message


def test_chat_caps_name_their_limit():
    video = {"type": "video_url", "video_url": {"url": "x.mp4"}}
    limits = RequestLimits(max_messages=2, max_text_chars=10, max_tokens=8)
    cases = [
        ({"messages": [{"role": "user", "content": "a"}] * 3}, "limits.max_messages"),
        (
            {
                "messages": [
                    {"role": "user", "content": [video, {"type": "text", "text": "y" * 11}]}
                ]
            },
            "limits.max_text_chars",
        ),
        ({"messages": [{"role": "user", "content": "a"}], "max_tokens": 9}, "limits.max_tokens"),
        (
            {"messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 9},
            "limits.max_tokens",
        ),
    ]
    for body, name in cases:
        with pytest.raises(RequestError) as err:
            check_chat(ChatRequest.model_validate(body), limits)
        assert err.value.param == name
    check_chat(
        ChatRequest.model_validate({**cases[0][0], "messages": cases[0][0]["messages"][:2]}), limits
    )


def test_a_decode_section_without_timeout_gets_the_online_budget():
    assert ServeConfig(decode={"clip_s": 5}).decode.timeout_s == 60.0
    assert ServeConfig(decode={"timeout_s": 30}).decode.timeout_s == 30.0
