"""A hostile-request corpus against the endpoint over real HTTP on loopback.

Each request gets its exact status and error code (never a 500), an OpenAI-style error body
without local paths, and a normal request is served right after it. Then the attacks that
need time or concurrency: clients that vanish mid-stream, slow bodies, slow media servers.
"""

from __future__ import annotations

import base64
import http.server
import json
import socket
import threading
import time
from fractions import Fraction
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests

from pipelines.media import synth

KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
MEDIA_HOST = "127.0.0.2"  # loopback alias standing in for a public media server
SMALL = {"num_cpus": 0.25}
LIMITS = {
    "max_messages": 8,
    "max_text_chars": 2000,
    "max_tokens": 16,
    "max_clips": 4,
    "max_image_pixels": 4_000_000,
    "body_timeout_s": 2.0,
}


def _png(width: int, height: int) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` pixels, with almost no data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    idat = zlib.compress(b"\x00" * (width + 1) * 64)  # the first 64 rows; a bomb needs no more
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def _data(raw: bytes, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(raw).decode()


def _sparse_video(path, frames: int = 7, gap_s: int = 600) -> None:
    """A few KB of H.264 whose frames lie ``gap_s`` apart: an hour of 'video'."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 30, np.uint8), "rgb24")
            frame.pts, frame.time_base = i * gap_s, Fraction(1, 1)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


class _MediaServer:
    """Loopback media host: files, a 404, a redirect to loopback, a one-byte-per-0.4 s drip."""

    def __init__(self, files: dict[str, bytes], internal_url: str) -> None:
        stop = self.stop = threading.Event()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                if self.path == "/drip.png":
                    self.send_response(200)
                    self.send_header("Content-Length", "100000")
                    self.end_headers()
                    while not stop.wait(0.4):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    return
                if self.path == "/to-internal":
                    self.send_response(302)
                    self.send_header("Location", internal_url)
                    self.end_headers()
                    return
                body = files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer((MEDIA_HOST, 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{MEDIA_HOST}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    import os

    from PIL import Image

    root = tmp_path_factory.mktemp("hostile-media")
    synth.write_video(root / "short.mp4", seconds=2.0, fps=10.0, width=64, height=64)
    synth.write_random_bytes(root / "random.mp4")
    synth.write_zero_bytes(root / "zero.mp4")
    _sparse_video(root / "sparse.mp4")
    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(root / "still.png")
    Image.fromarray(np.full((40, 60, 3), 90, np.uint8)).save(root / "still.tiff")
    os.mkfifo(root / "pipe.mp4")
    return root


@pytest.fixture(scope="module")
def media_server(media):
    still = (media / "still.png").read_bytes()
    server = _MediaServer(
        {"/still.png": still, "/caf%C3%A9.png": still}, "http://127.0.0.1:9/secret"
    )
    yield server
    server.close()


@pytest.fixture(scope="module")
def hostile(serve_url, tiny_model_dir, media):
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    config = ServeConfig(
        model={"model": tiny_model_dir("qwen2_vl")},
        generation={"max_new_tokens": 4},
        request_timeout_s=60,
        decode={"timeout_s": 30},
        max_inflight=3,
        limits=LIMITS,
        security={
            "api_key": KEY,
            "media_dir": str(media),
            "max_body_bytes": 1024**2,
            "fetch_timeout_s": 2.0,
            "allow_networks": [f"{MEDIA_HOST}/32"],
        },
        ingress=SMALL,
        decoder=SMALL,
        encoder=SMALL,
        lm=SMALL,
    )
    serve.run(build_app(config), name="hostile", route_prefix="/hostile")
    yield f"{serve_url}/hostile"
    serve.delete("hostile")


def _chat(url: str, kind: str = "video_url", text: str = "What is it?", **extra) -> dict:
    content = [{"type": kind, kind: {"url": url}}, {"type": "text", "text": text}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 2, **extra}


def _normal(base: str, media) -> None:
    payload = _chat(_data((media / "still.png").read_bytes(), "image/png"), "image_url")
    r = requests.post(f"{base}/v1/chat/completions", json=payload, headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] is not None


def _inflight() -> int:
    from ray import serve

    return (
        serve.get_deployment_handle("Ingress", app_name="hostile")
        .stats.remote()
        .result()["inflight"]
    )


# (id, path, request kwargs built from (media dir, media server url), status, code)
def _cases():
    chat, caps = "/v1/chat/completions", "/v1/captions"
    raw = lambda b: {"data": b, "headers": {"Content-Type": "application/json"}}  # noqa: E731
    deep = b"[" * 100_000 + b"]" * 100_000
    img = lambda m, name, mime="image/png": _chat(_data((m / name).read_bytes(), mime), "image_url")  # noqa: E731
    vid = lambda m, name: _chat(_data((m / name).read_bytes(), "video/mp4"))  # noqa: E731
    many = [{"role": "user", "content": "hi"}] * 9
    return [
        ("chat-list", chat, lambda m, s: raw(b"[1]"), 400, "invalid_request"),
        ("chat-null", chat, lambda m, s: raw(b"null"), 400, "invalid_request"),
        ("chat-string", chat, lambda m, s: raw(b'"x"'), 400, "invalid_request"),
        ("chat-deep", chat, lambda m, s: raw(deep), 400, "invalid_request"),
        ("chat-not-json", chat, lambda m, s: raw(b"{not json"), 400, "invalid_request"),
        ("chat-empty-body", chat, lambda m, s: raw(b""), 400, "invalid_request"),
        ("chat-no-messages", chat, lambda m, s: {"json": {"messages": []}}, 400, "invalid_request"),
        ("chat-no-video", chat, lambda m, s: {"json": {"messages": many[:1]}}, 400, "invalid_request"),
        ("chat-max-tokens-0", chat, lambda m, s: {"json": _chat("short.mp4", max_tokens=0)}, 400, "invalid_request"),
        ("chat-max-tokens-8192", chat, lambda m, s: {"json": _chat("short.mp4", max_tokens=8192)}, 413, "limit_exceeded"),
        ("chat-too-many-messages", chat, lambda m, s: {"json": {**_chat("short.mp4"), "messages": [*many, _chat("short.mp4")["messages"][0]]}}, 413, "limit_exceeded"),
        ("chat-text-too-long", chat, lambda m, s: {"json": _chat("short.mp4", text="x" * 2001)}, 413, "limit_exceeded"),
        ("chat-other-model", chat, lambda m, s: {"json": _chat("short.mp4", model="gpt-9")}, 404, "model_not_found"),
        ("chat-long-user", chat, lambda m, s: {"json": _chat("short.mp4", user="u" * 300)}, 400, "invalid_request"),
        ("url-unclosed-bracket", chat, lambda m, s: {"json": _chat("http://[::1")}, 400, "invalid_request"),
        ("url-nfkc-hash", chat, lambda m, s: {"json": _chat("http://a\uff03@b/x.mp4")}, 400, "invalid_request"),
        ("url-backslash", chat, lambda m, s: {"json": _chat("http://h.test\\@127.0.0.1/x")}, 400, "invalid_request"),
        ("url-loopback", chat, lambda m, s: {"json": _chat("http://127.0.0.1:9/x.mp4")}, 403, "forbidden"),
        ("url-nat64", chat, lambda m, s: {"json": _chat("http://[64:ff9b::7f00:1]/x.mp4")}, 403, "forbidden"),
        ("url-6to4", chat, lambda m, s: {"json": _chat("http://[2002:7f00:1::1]/x.mp4")}, 403, "forbidden"),
        ("url-v4-compat", chat, lambda m, s: {"json": _chat("http://[::7f00:1]/x.mp4")}, 403, "forbidden"),
        ("url-siit", chat, lambda m, s: {"json": _chat("http://[::ffff:0:7f00:1]/x.mp4")}, 403, "forbidden"),
        ("url-192-0-0", chat, lambda m, s: {"json": _chat("http://192.0.0.8/x.mp4")}, 403, "forbidden"),
        ("url-metadata", chat, lambda m, s: {"json": _chat("http://169.254.169.254/latest/")}, 403, "forbidden"),
        ("url-gopher", chat, lambda m, s: {"json": _chat("gopher://h.test/")}, 403, "forbidden"),
        ("url-redirect-internal", chat, lambda m, s: {"json": _chat(f"{s}/to-internal")}, 403, "forbidden"),
        ("url-upstream-404", chat, lambda m, s: {"json": _chat(f"{s}/missing.png", "image_url")}, 502, "fetch_failed"),
        ("url-drip", chat, lambda m, s: {"json": _chat(f"{s}/drip.png", "image_url")}, 504, "timeout"),
        ("path-escape", chat, lambda m, s: {"json": _chat("../../etc/passwd")}, 403, "forbidden"),
        ("path-file-url", chat, lambda m, s: {"json": _chat("file:///etc/passwd")}, 403, "forbidden"),
        ("path-missing", chat, lambda m, s: {"json": _chat("missing.mp4")}, 404, "not_found"),
        ("path-fifo", chat, lambda m, s: {"json": _chat("pipe.mp4")}, 403, "forbidden"),
        ("path-nul", chat, lambda m, s: {"json": _chat("a\x00.mp4")}, 400, "invalid_request"),
        ("data-not-base64", chat, lambda m, s: {"json": _chat("data:video/mp4;base64,***")}, 400, "invalid_request"),
        ("body-too-large", chat, lambda m, s: {"json": _chat("data:video/mp4;base64," + "A" * 2 * 1024**2)}, 413, "too_large"),
        ("image-bomb-10k", chat, lambda m, s: {"json": _chat(_data(_png(10_000, 10_000), "image/png"), "image_url")}, 413, "limit_exceeded"),
        ("image-bomb-14k", chat, lambda m, s: {"json": _chat(_data(_png(14_000, 14_000), "image/png"), "image_url")}, 413, "limit_exceeded"),
        ("image-tiff", chat, lambda m, s: {"json": img(m, "still.tiff", "image/tiff")}, 422, "unsupported_format"),
        ("image-garbage", chat, lambda m, s: {"json": _chat(_data(b"GIF89a" + b"\x00" * 50, "image/gif"), "image_url")}, 422, "unsupported_format"),
        ("video-random", chat, lambda m, s: {"json": vid(m, "random.mp4")}, 422, "corrupt"),
        ("video-zero", chat, lambda m, s: {"json": vid(m, "zero.mp4")}, 422, "empty"),
        ("session-too-long", chat, lambda m, s: {"json": img(m, "still.png"), "headers": {"X-Session-Id": "s" * 300}}, 400, "invalid_request"),
        ("captions-list", caps, lambda m, s: raw(b"[1]"), 400, "invalid_request"),
        ("captions-null", caps, lambda m, s: raw(b"null"), 400, "invalid_request"),
        ("captions-string", caps, lambda m, s: raw(b'"x"'), 400, "invalid_request"),
        ("captions-deep", caps, lambda m, s: raw(deep), 400, "invalid_request"),
        ("captions-no-url", caps, lambda m, s: {"json": {}}, 400, "invalid_request"),
        ("captions-url-not-str", caps, lambda m, s: {"json": {"url": {"a": 1}}}, 400, "invalid_request"),
        ("captions-bad-url", caps, lambda m, s: {"json": {"url": "http://[::1"}}, 400, "invalid_request"),
        ("captions-multipart-no-boundary", caps, lambda m, s: {"data": b"x", "headers": {"Content-Type": "multipart/form-data"}}, 400, "invalid_request"),
        ("captions-multipart-empty", caps, lambda m, s: {"files": {"other": ("a", b"b")}}, 400, "invalid_request"),
        ("captions-prompt-too-long", caps, lambda m, s: {"json": {"url": "short.mp4", "prompt": "p" * 2001}}, 413, "limit_exceeded"),
        ("captions-clip-bomb", caps, lambda m, s: {"json": {"url": "sparse.mp4"}}, 413, "limit_exceeded"),
        ("captions-clip-bomb-upload", caps, lambda m, s: {"files": {"file": ("s.mp4", (m / "sparse.mp4").read_bytes())}}, 413, "limit_exceeded"),
        ("route-unknown", "/v1/embeddings", lambda m, s: {"json": {}}, 404, "not_found"),
    ]  # fmt: skip


CASES = _cases()


@pytest.mark.parametrize(
    "path, build, status, code", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_hostile_request_gets_its_exact_refusal_then_a_normal_one_is_served(
    hostile, media, media_server, path, build, status, code
):
    kwargs = build(media, media_server.url)
    headers = {**AUTH, **kwargs.pop("headers", {})}
    r = requests.post(f"{hostile}{path}", headers=headers, timeout=60, **kwargs)
    body = r.json()
    assert (r.status_code, body["error"]["code"]) == (status, code), r.text
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "/tmp/" not in r.text and ".media" not in r.text and str(media) not in r.text
    if code == "limit_exceeded":
        assert body["error"]["param"].startswith("limits.")
        assert body["error"]["param"] in body["error"]["message"]
    _normal(hostile, media)


def test_corpus_is_large_enough():
    assert len(CASES) >= 40


def test_auth_covers_the_schema_and_docs_are_gone(hostile):
    for path in ("/v1/models", "/openapi.json"):
        r = requests.get(f"{hostile}{path}", timeout=10)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
        assert r.headers["WWW-Authenticate"] == "Bearer"
        assert requests.get(f"{hostile}{path}", headers=AUTH, timeout=10).status_code == 200
    for path in ("/docs", "/redoc"):
        r = requests.get(f"{hostile}{path}", headers=AUTH, timeout=10)
        assert (r.status_code, r.json()["error"]["code"]) == (404, "not_found")
    r = requests.post(f"{hostile}/v1/chat/completions", json={}, timeout=10)
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
    assert requests.get(f"{hostile}/readyz", timeout=30).json() == {"ready": True}


def _raw_request(base: str, path: str, body: bytes, send_body: bool = True) -> socket.socket:
    parts = urlsplit(base)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    head = (
        f"POST {parts.path}{path} HTTP/1.1\r\nHost: {parts.hostname}\r\n"
        f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    sock.sendall(head.encode() + (body if send_body else b""))
    return sock


def _read_response(sock: socket.socket) -> tuple[int, dict]:
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += sock.recv(4096)
    return int(head[9:12]), json.loads(body)


def _wait_inflight_zero(timeout_s: float = 20.0) -> int:
    deadline = time.monotonic() + timeout_s
    while (n := _inflight()) and time.monotonic() < deadline:
        time.sleep(0.2)
    return n


def test_clients_vanishing_mid_stream_do_not_leak_slots(hostile, media):
    payload = _chat(_data((media / "still.png").read_bytes(), "image/png"), "image_url")
    body = json.dumps({**payload, "stream": True, "max_tokens": 16}).encode()
    for _ in range(8):  # more than max_inflight=3: a leak would lock everyone out
        sock = _raw_request(hostile, "/v1/chat/completions", body)
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
        sock.close()  # gone mid-stream
    # A client that goes before any answer (non-streaming) frees its slot too.
    for _ in range(4):
        _raw_request(hostile, "/v1/chat/completions", json.dumps(payload).encode()).close()
    assert _wait_inflight_zero() == 0
    _normal(hostile, media)


def test_slow_bodies_hold_no_slot_and_time_out_with_408(hostile, media):
    body = json.dumps(_chat("short.mp4")).encode()
    slow = [_raw_request(hostile, "/v1/chat/completions", body, send_body=False) for _ in range(5)]
    try:
        for sock in slow:
            sock.sendall(body[:10])
        _normal(hostile, media)  # five slow clients, three slots: still served
        for sock in slow:
            status, body = _read_response(sock)
            assert (status, body["error"]["code"]) == (408, "body_timeout")
            assert body["error"]["param"] == "limits.body_timeout_s"
    finally:
        for sock in slow:
            sock.close()
