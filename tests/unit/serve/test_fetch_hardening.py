"""Fetch guard against hostile servers and URLs: deadlines, transition addresses, parsing."""

from __future__ import annotations

import os
import socket
import threading
import time

import pytest

from pipelines.core.errors import ErrorCode
from serve.addresses import address_allowed
from serve.config import SecurityConfig
from serve.fetch import FetchError, FetchPolicy, fetch, redirect_target
from serve.media import load_media

ALLOWED = "127.0.0.2"


class _Trickle:
    """A TCP server that answers one byte every ``gap_s`` seconds, forever (or until closed)."""

    def __init__(self, response: bytes, gap_s: float = 0.4) -> None:
        self.sock = socket.create_server((ALLOWED, 0))
        self.port = self.sock.getsockname()[1]
        self.response, self.gap_s, self.stop = response, gap_s, threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(4096)
            for i in range(len(self.response)):
                if self.stop.wait(self.gap_s):
                    return
                try:
                    conn.sendall(self.response[i : i + 1])
                except OSError:
                    return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def policy(**kw) -> FetchPolicy:
    return FetchPolicy(allow_networks=(f"{ALLOWED}/32", "127.0.0.3/32"), **kw)


def refused(url: str, pol: FetchPolicy) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, pol)
    return info.value


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 100,  # slow body
        b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"y" * 200,  # slow headers
    ],
    ids=["body", "headers"],
)
def test_deadline_covers_a_server_trickling_one_byte_at_a_time(response):
    server = _Trickle(response, gap_s=0.05 if b"Content-Length" in response else 0.4)
    try:
        started = time.monotonic()
        err = refused(f"http://{ALLOWED}:{server.port}/v.mp4", policy(timeout_s=1.0))
        assert err.code is ErrorCode.TIMEOUT and err.status == 504
        assert time.monotonic() - started < 2.0
    finally:
        server.close()


def test_dns_has_the_fetch_deadline():
    def stuck(host, port):
        time.sleep(3)
        return ["93.184.216.34"]

    started = time.monotonic()
    err = refused("http://slow-dns.example/v.mp4", policy(timeout_s=0.5, resolver=stuck))
    assert err.code is ErrorCode.TIMEOUT and time.monotonic() - started < 1.5


@pytest.mark.parametrize(
    "ip",
    [
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::a00:1",  # local-use NAT64 of 10.0.0.1
        "2002:7f00:1::1",  # 6to4 of 127.0.0.1
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::ffff:0:7f00:1",  # SIIT IPv4-translated 127.0.0.1
        "::ffff:7f00:1",  # IPv4-mapped 127.0.0.1
        "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
        "192.0.0.8",
        "192.0.0.170",  # NAT64 discovery
        "100.64.0.1",
        "198.18.0.1",
        "fd00::1",
        "fe80::1%eth0",
        "ff02::1",
        "::",
        "not-an-ip",
    ],
)
def test_addresses_reaching_internal_ipv4_are_refused(ip):
    assert address_allowed(ip) is False


@pytest.mark.parametrize("ip", ["93.184.216.34", "2606:4700:4700::1111", "64:ff9b::808:808"])
def test_public_addresses_pass(ip):
    assert address_allowed(ip) is True


@pytest.mark.parametrize(
    "url",
    [
        "http://[::1",
        "http://a\uff03@b/x.mp4",  # fullwidth '#': urlsplit raises ValueError under NFKC
        "http://h:99999/x.mp4",
        "http://h:port/x.mp4",
        "http:///x.mp4",
        "http://" + "a" * 64 + ".test/x.mp4",  # a DNS label longer than 63
    ],
)
def test_unparseable_urls_are_invalid_requests(url):
    err = refused(url, policy(resolver=lambda h, p: [ALLOWED]))
    assert err.code is ErrorCode.INVALID_REQUEST and err.status == 400


def test_non_ascii_path_is_percent_encoded_and_fetched():
    import http.server

    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer((ALLOWED, 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://{ALLOWED}:{httpd.server_address[1]}/caf\u00e9.mp4?q=\u00e9"
        assert fetch(url, policy()) == b"ok"
        assert seen == ["/caf%C3%A9.mp4?q=%C3%A9"]
        # Every resolved address is tried: the first one is down, the second answers.
        pol = policy(resolver=lambda h, p: ["127.0.0.3", ALLOWED])
        assert fetch(f"http://media.test:{httpd.server_address[1]}/a.mp4", pol) == b"ok"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_https_to_http_redirect_is_refused():
    assert redirect_target("https://a.test/x", "/y") == "https://a.test/y"
    assert redirect_target("http://a.test/x", "https://b.test/y") == "https://b.test/y"
    for location in ("http://a.test/y", "ftp://a.test/y"):
        with pytest.raises(FetchError) as info:
            redirect_target("https://a.test/x", location)
        assert info.value.code is ErrorCode.FORBIDDEN


def test_fifo_and_nul_paths_in_media_dir_are_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp4")
    sec = SecurityConfig(media_dir=str(tmp_path))
    result: list = []

    def load():
        try:
            load_media("pipe.mp4", sec)
        except FetchError as exc:
            result.append(exc.code)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    worker.join(5)
    assert result == [ErrorCode.FORBIDDEN]
    for bad in ("a\x00b.mp4", "http://[::1"):
        with pytest.raises(FetchError) as info:
            load_media(bad, sec)
        assert info.value.code is ErrorCode.INVALID_REQUEST
