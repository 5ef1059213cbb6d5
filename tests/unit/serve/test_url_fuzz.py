"""Property-based fuzzing of the URL guard and of the request models: typed refusals only.

Whatever a client sends, the guard answers with a FetchError (never another exception, so
never a 500) and never connects to a refused address; the request models answer a
RequestError or a valid request.
"""

from __future__ import annotations

import ipaddress
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.core.errors import ErrorCode
from serve.addresses import address_allowed
from serve.config import RequestLimits, SecurityConfig
from serve.errors import STATUS, RequestError
from serve.fetch import FetchError, FetchPolicy
from serve.limits import check_chat, parse
from serve.media import load_media
from serve.openai_api import CaptionsRequest, ChatRequest, split_messages

FAST = settings(max_examples=150, deadline=None)
INTERNAL_V4 = [
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "192.0.0.0/24",
    "0.0.0.0/8",
]


class _NoNetwork:
    """A resolver that records what it was asked and answers an internal address."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.asked.append(host)
        return ["10.0.0.1"]


url_parts = st.sampled_from(
    ["http://", "https://", "file://", "data:", "ftp://", "HTTP://", "//", "", "gopher://"]
)
hosts = st.one_of(
    st.sampled_from(["[::1", "[::1]", "127.0.0.1", "a\uff03@b", "h:99999", "[64:ff9b::7f00:1]"]),
    st.text(max_size=30),
)
tails = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40
) | st.sampled_from(["/caf\u00e9.mp4", "/../../etc/passwd", "/\x00", "?#@\\", "/%2e%2e/"])


@FAST
@given(url_parts, hosts, tails)
def test_any_url_is_fetched_or_refused_with_a_typed_error(scheme, host, tail):
    resolver = _NoNetwork()
    pol = FetchPolicy(timeout_s=0.5, resolver=resolver)
    try:
        load_media(scheme + host + tail, SecurityConfig(), pol)
    except FetchError as exc:
        assert exc.code in STATUS and 400 <= exc.status < 600
    else:
        raise AssertionError("nothing here may load: no media_dir, only internal answers")


def _embed(kind: str, v4: ipaddress.IPv4Address) -> str:
    n = int(v4)
    forms = {
        "nat64": ipaddress.IPv6Address((0x64FF9B << 96) | n),
        "nat64-local": ipaddress.IPv6Address((0x64FF9B0001 << 80) | n),
        "6to4": ipaddress.IPv6Address((0x2002 << 112) | (n << 80) | 1),
        "compat": ipaddress.IPv6Address(n),
        "mapped": ipaddress.IPv6Address((0xFFFF << 32) | n),
        "siit": ipaddress.IPv6Address((0xFFFF << 48) | n),
    }
    return str(forms[kind])


@FAST
@given(
    st.sampled_from(INTERNAL_V4),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.sampled_from(["plain", "nat64", "nat64-local", "6to4", "compat", "mapped", "siit"]),
)
def test_internal_ipv4_is_refused_in_every_ipv6_disguise(net, offset, kind):
    network = ipaddress.IPv4Network(net)
    v4 = network[offset % network.num_addresses]
    ip = str(v4) if kind == "plain" else _embed(kind, v4)
    assert address_allowed(ip) is False, ip


@FAST
@given(st.integers(min_value=0, max_value=2**128 - 1))
def test_address_check_never_raises(n):
    assert address_allowed(str(ipaddress.IPv6Address(n))) in (True, False)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool", "x"]),
        "content": st.one_of(
            st.text(max_size=50),
            st.none(),
            st.lists(
                st.fixed_dictionaries(
                    {"type": st.sampled_from(["text", "video_url", "image_url", "audio"])},
                    optional={
                        "text": st.text(max_size=20) | json_values,
                        "video_url": st.fixed_dictionaries({"url": st.text(max_size=20)}),
                        "image_url": json_values,
                    },
                ),
                max_size=4,
            ),
        ),
    }
)
chat_bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {"messages": st.lists(message, max_size=5)},
        optional={
            "max_tokens": st.integers(min_value=-10, max_value=10**6) | json_values,
            "model": json_values,
            "stream": json_values,
            "user": st.text(max_size=300),
            "temperature": st.floats() | json_values,
        },
    ),
)


@FAST
@given(chat_bodies)
def test_any_chat_body_is_a_request_or_a_typed_refusal(data):
    body = json.dumps(data).encode()
    try:
        req = parse(ChatRequest, body)
        check_chat(req, RequestLimits())
        conv = split_messages(req)
    except RequestError as exc:
        assert exc.code in (ErrorCode.INVALID_REQUEST, ErrorCode.LIMIT_EXCEEDED)
        assert exc.status in (400, 413)
    else:
        assert conv.prompt.strip() and conv.media[0] in ("video", "image")


@FAST
@given(json_values | st.binary(max_size=64).map(lambda b: b.decode("latin-1")))
def test_any_captions_body_is_a_request_or_a_typed_refusal(data):
    body = data.encode() if isinstance(data, str) else json.dumps(data).encode()
    try:
        req = parse(CaptionsRequest, body)
    except RequestError as exc:
        assert exc.code is ErrorCode.INVALID_REQUEST
    else:
        assert req.url


def test_deep_nesting_is_a_400_not_a_recursion_error():
    for model in (ChatRequest, CaptionsRequest):
        for body in (b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
            try:
                parse(model, body)
            except RequestError as exc:
                assert exc.code is ErrorCode.INVALID_REQUEST
            else:
                raise AssertionError("a depth bomb parsed")
