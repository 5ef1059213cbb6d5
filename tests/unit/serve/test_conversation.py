"""Chat follow-ups: a conversation's history, and the per-session encoding cache."""

from __future__ import annotations

import pytest

from pipelines.core.records import Ask, ClipRef, EncodedClip
from serve.encoding_cache import EncodingCache
from serve.openai_api import ChatRequest, RequestError, split_messages

VIDEO = {"type": "video_url", "video_url": {"url": "data:video/mp4;base64,AAAA"}}


def conversation(*messages) -> ChatRequest:
    return ChatRequest.model_validate({"messages": list(messages)})


def test_earlier_turns_become_the_history_in_order():
    conv = split_messages(
        conversation(
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [VIDEO, {"type": "text", "text": "What is it?"}]},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "What colour?"},
            {"role": "assistant", "content": [{"type": "text", "text": "Black."}]},
            {"role": "user", "content": "Is it moving?"},
        )
    )
    assert conv.prompt == "Is it moving?"
    assert conv.history == (("What is it?", "A cat."), ("What colour?", "Black."))
    assert conv.media == ("video", "data:video/mp4;base64,AAAA")


def test_consecutive_turns_of_one_role_are_joined_and_a_greeting_dropped():
    conv = split_messages(
        conversation(
            {"role": "assistant", "content": "Hello! Send me a video."},
            {"role": "user", "content": [VIDEO]},
            {"role": "user", "content": "Describe it."},
        )
    )
    assert (conv.prompt, conv.history) == ("Describe it.", ())


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "no video"}],
        [{"role": "user", "content": [VIDEO, VIDEO, {"type": "text", "text": "two"}]}],
        [{"role": "user", "content": [VIDEO, {"type": "text", "text": "q"}]},
         {"role": "assistant", "content": "an answer but no new question"}],
    ],
)  # fmt: skip
def test_malformed_conversations_are_400(messages):
    with pytest.raises(RequestError) as err:
        split_messages(conversation(*messages))
    assert err.value.status == 400 and err.value.code == "invalid_request"


def encoded(tag: str, size: int) -> EncodedClip:
    return EncodedClip(ClipRef(tag, tag, (Ask("p"),), 0, 0.0, 1.0), b"x" * size)


def test_cache_is_scoped_by_session_and_content_and_bounded_in_bytes():
    cache = EncodingCache(max_bytes=250)
    a = EncodingCache.key("s1", b"video-a", "chat")
    assert a != EncodingCache.key("s2", b"video-a", "chat")  # another session never hits
    assert a != EncodingCache.key("s1", b"video-b", "chat")
    assert a == EncodingCache.key("s1", b"video-a", "chat")
    keys = [EncodingCache.key("s1", bytes([i]), "chat") for i in range(3)]
    for i, key in enumerate(keys):
        cache.put(key, encoded(str(i), 100))
    # 3 x 100 bytes > 250: the least recently used (0) went out.
    assert cache.get(keys[0]) is None and cache.get(keys[2]).ref.video_id == "2"
    cache.get(keys[1])  # 1 is now the most recent: 2 goes next
    cache.put(a, encoded("a", 100))
    assert cache.get(keys[2]) is None and cache.get(keys[1]) is not None
    cache.put(EncodingCache.key("s1", b"huge", "chat"), encoded("huge", 251))  # never fits
    assert cache.stats()["entries"] == 2 and cache.stats()["bytes"] == 200
    assert EncodingCache(0).enabled is False
