"""SSRF guard: refused targets are refused before any connection is made."""

from __future__ import annotations

import http.server
import threading

import pytest

from pipelines.core.errors import ErrorCode
from serve.fetch import FetchError, FetchPolicy, fetch

ALLOWED = "127.0.0.2"  # loopback alias standing in for a public media host


class _Server:
    """A real HTTP server on loopback that counts the connections it accepts."""

    def __init__(self, host: str, routes: dict[str, tuple[int, dict, bytes]]):
        outer = self
        self.connections = 0

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                status, headers, body = routes.get(self.path, (404, {}, b""))
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if "Content-Length" not in headers and "X-No-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        class Counting(http.server.ThreadingHTTPServer):
            def process_request(self, request, client_address):
                outer.connections += 1
                super().process_request(request, client_address)

        self.httpd = Counting((host, 0), Handler)
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def forbidden_server():
    server = _Server("127.0.0.1", {"/secret": (200, {}, b"internal")})
    yield server
    server.close()


@pytest.fixture(scope="module")
def allowed_server(forbidden_server):
    forbidden = forbidden_server
    server = _Server(
        ALLOWED,
        {
            "/clip.mp4": (200, {}, b"x" * 1000),
            "/to-internal": (302, {"Location": f"{forbidden.url}/secret"}, b""),
            "/to-self": (302, {"Location": "/clip.mp4"}, b""),
            "/big-declared": (200, {"Content-Length": "999999"}, b""),
            "/big-chunked": (200, {"X-No-Length": "1", "Connection": "close"}, b"y" * 5000),
        },
    )
    yield server
    server.close()


@pytest.fixture
def forbidden(forbidden_server):
    forbidden_server.connections = 0
    return forbidden_server


@pytest.fixture
def allowed(allowed_server, forbidden):
    allowed_server.connections = 0
    return allowed_server


def policy(**kw) -> FetchPolicy:
    return FetchPolicy(allow_networks=(f"{ALLOWED}/32",), max_bytes=2000, **kw)


def refused(url: str, pol: FetchPolicy) -> FetchError:
    with pytest.raises(FetchError) as info:
        fetch(url, pol)
    return info.value


def test_allowed_host_is_fetched_and_redirects_within_it_work(allowed):
    assert fetch(f"{allowed.url}/clip.mp4", policy()) == b"x" * 1000
    assert fetch(f"{allowed.url}/to-self", policy()) == b"x" * 1000


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.1:{port}/secret",
        "http://localhost:{port}/secret",
        "http://2130706433:{port}/secret",  # 127.0.0.1 as a decimal integer
        "http://[::1]:{port}/secret",
        "http://[::ffff:127.0.0.1]:{port}/secret",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data/",
        "http://0.0.0.0:{port}/secret",
        "http://224.0.0.1/",
    ],
)
def test_internal_addresses_are_refused_without_connecting(forbidden, target):
    port = forbidden.httpd.server_address[1]
    err = refused(target.format(port=port), policy())
    assert err.code is ErrorCode.FORBIDDEN and err.status == 403
    assert forbidden.connections == 0


def test_public_looking_name_resolving_to_loopback_is_refused(forbidden):
    port = forbidden.httpd.server_address[1]
    pol = policy(resolver=lambda host, p: ["127.0.0.1"] if host == "media.example.com" else [])
    err = refused(f"http://media.example.com:{port}/secret", pol)
    assert "non-public address" in err.message and "127.0.0.1" not in err.message
    assert forbidden.connections == 0


def test_name_with_one_internal_answer_among_public_ones_is_refused(forbidden):
    pol = policy(resolver=lambda host, p: ["93.184.216.34", "10.1.2.3"])
    err = refused("http://cdn.example.com/v.mp4", pol)
    # Refused without echoing the internal address: it would map the server's network.
    assert err.code is ErrorCode.FORBIDDEN and "10.1.2.3" not in err.message


def test_redirect_to_an_internal_host_is_refused(allowed, forbidden):
    err = refused(f"{allowed.url}/to-internal", policy())
    assert "non-public" in err.message
    assert allowed.connections == 1 and forbidden.connections == 0


@pytest.mark.parametrize(
    "trick",
    [
        "http://{allowed}\\@127.0.0.1:{port}/secret",
        "http://{allowed}@127.0.0.1:{port}/secret",
        "http://user:pw@{allowed}/clip.mp4",
        "file:///etc/passwd",
        "gopher://{allowed}/",
        "http://{allowed}/clip.mp4\r\nX: y",
    ],
)
def test_url_tricks_are_refused(allowed, forbidden, trick):
    port = forbidden.httpd.server_address[1]
    refused(trick.format(allowed=ALLOWED, port=port), policy())
    assert forbidden.connections == 0 and allowed.connections == 0


def test_byte_cap_is_enforced_with_and_without_content_length(allowed):
    for path in ("/big-declared", "/big-chunked"):
        err = refused(f"{allowed.url}{path}", policy())
        assert err.code is ErrorCode.TOO_LARGE and err.status == 413


def test_domain_allowlist(allowed):
    pol = policy(allowed_domains=("media.example.com",))
    assert "not in the allowed domains" in refused(f"{allowed.url}/clip.mp4", pol).message
    assert allowed.connections == 0
