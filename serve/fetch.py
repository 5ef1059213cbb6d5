"""Fetch a media URL without letting the server be pointed at itself or its network (SSRF).

Every address a name resolves to must be public; the connection then goes to one of those
very checked addresses (the Host header and TLS SNI carry the name), so a second DNS answer
cannot swap in an internal address between the check and the connect. Redirects are
followed by hand, each hop checked again, never from https down to http. The byte cap is
enforced while streaming, and the deadline covers DNS, connect, headers and body: a timer
shuts the socket when it passes, however slowly the server trickles bytes.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from urllib.parse import quote, urljoin, urlsplit

from pipelines.core.errors import ErrorCode
from serve.addresses import address_allowed
from serve.errors import status_of

Resolver = Callable[[str, int], Sequence[str]]
# getaddrinfo has no timeout of its own: it runs here and the fetch stops waiting at its
# deadline. A resolver stuck past it still holds one of these threads, never the caller's.
_DNS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vidcap-dns")
# Printable ASCII that may stay as it is in a request target; the rest is percent-encoded.
_SAFE = "/:@!$&'()*+,;=-._~%?"


class FetchError(Exception):
    """A refused or failed fetch; its HTTP status comes from the code (serve.errors.STATUS)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    @property
    def status(self) -> int:
        return status_of(self.code)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 256 * 1024**2
    timeout_s: float = 20.0
    max_redirects: int = 3
    allowed_domains: tuple[str, ...] = ()
    """If set, only these hosts (and their subdomains) may be fetched."""
    allow_networks: tuple[str, ...] = ()
    """CIDRs exempt from the public-address rule (tests, a trusted media cache)."""
    resolver: Resolver = field(default=system_resolver, compare=False)


def _refused(message: str) -> FetchError:
    return FetchError(ErrorCode.FORBIDDEN, message)


def _invalid(message: str) -> FetchError:
    return FetchError(ErrorCode.INVALID_REQUEST, message)


def check_url(url: str, policy: FetchPolicy) -> tuple[str, str, int, str]:
    """(scheme, ASCII host, port, request target) of an acceptable URL, or FetchError."""
    if "\\" in url or any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise _invalid("URL contains backslashes, spaces or control characters")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:  # '[::1', a port that is no number, NFKC tricks like 'a＃@b'
        raise _invalid("URL cannot be parsed") from None
    if parts.scheme not in ("http", "https"):
        raise _refused(f"scheme {parts.scheme[:16]!r} is not fetched")
    if "@" in parts.netloc:
        raise _refused("URLs with user info ('@') are refused")
    if not host:
        raise _invalid("URL has no host")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise _invalid("host name is not a valid (internationalized) domain name") from None
    port = port or (443 if parts.scheme == "https" else 80)
    if policy.allowed_domains and not any(
        host == d or host.endswith("." + d) for d in policy.allowed_domains
    ):
        raise _refused(f"host {host[:255]!r} is not in the allowed domains")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, quote(path, safe=_SAFE)


def _resolve_public(host: str, port: int, policy: FetchPolicy, deadline: float) -> list[str]:
    future = _DNS.submit(policy.resolver, host, port)
    try:
        ips = list(future.result(timeout=max(0.0, deadline - time.monotonic())))
    except FutureTimeout:
        future.cancel()
        raise FetchError(ErrorCode.TIMEOUT, f"resolving {host!r} timed out") from None
    except (OSError, UnicodeError, ValueError):
        raise FetchError(ErrorCode.FETCH_FAILED, f"cannot resolve {host!r}") from None
    if not ips:
        raise FetchError(ErrorCode.FETCH_FAILED, f"{host!r} resolves to no address")
    if not all(address_allowed(ip, policy.allow_networks) for ip in ips):
        # One bad answer taints the name: an attacker controls which one we would use. The
        # address itself is not echoed: it would map the server's network for the client.
        raise _refused(f"{host!r} resolves to a non-public address")
    return ips


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, ips: list[str], port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ips = ips

    def _raw(self) -> socket.socket:
        last: OSError | None = None
        for ip in self._ips:  # every one was checked; try the next when one is down
            try:
                return socket.create_connection((ip, self.port), self.timeout)
            except OSError as exc:
                last = exc
        assert last is not None
        raise last

    def connect(self) -> None:
        self.sock = self._raw()


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    def __init__(self, host: str, ips: list[str], port: int, timeout: float) -> None:
        super().__init__(host, ips, port, timeout)
        self._context = ssl.create_default_context()

    def connect(self) -> None:
        self.sock = self._context.wrap_socket(self._raw(), server_hostname=self.host)


def _shut(conn: http.client.HTTPConnection) -> None:
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: the read it would have ended has ended


def fetch(url: str, policy: FetchPolicy) -> bytes:
    """Return the body of ``url``, or raise FetchError; never connects to a refused address."""
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(policy.max_redirects + 1):
        scheme, host, port, path = check_url(url, policy)
        ips = _resolve_public(host, port, policy, deadline)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise FetchError(ErrorCode.TIMEOUT, f"fetching {host} timed out")
        cls = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        conn = cls(host, ips, port, timeout=remaining)
        timer = threading.Timer(remaining, _shut, (conn,))
        timer.daemon = True
        timer.start()
        try:
            location = _get(conn, host, path, policy)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            if time.monotonic() >= deadline or isinstance(exc, TimeoutError):
                raise FetchError(ErrorCode.TIMEOUT, f"fetching {host} timed out") from None
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise FetchError(ErrorCode.FETCH_FAILED, f"fetching {host}: {reason}") from None
        finally:
            timer.cancel()
            conn.close()
        if isinstance(location, bytes):
            if time.monotonic() >= deadline:
                raise FetchError(ErrorCode.TIMEOUT, f"fetching {host} timed out")
            return location
        url = redirect_target(url, location)
    raise FetchError(ErrorCode.FETCH_FAILED, f"more than {policy.max_redirects} redirects")


def redirect_target(url: str, location: str) -> str:
    """Where a redirect leads; never from https down to http, where anyone on the path
    could read or change the media."""
    try:
        target = urljoin(url, location)
        downgrade = urlsplit(url).scheme == "https" and urlsplit(target).scheme != "https"
    except ValueError:
        raise _invalid("redirect Location cannot be parsed") from None
    if downgrade:
        raise _refused("redirect from https to another scheme is refused")
    return target


def _get(conn: http.client.HTTPConnection, host: str, path: str, policy: FetchPolicy):
    """The body (bytes) of one GET, or the redirect's Location (str)."""
    conn.request("GET", path, headers={"User-Agent": "vidcap", "Accept": "*/*"})
    resp = conn.getresponse()
    if resp.status in (301, 302, 303, 307, 308):
        location = resp.getheader("Location")
        if not location:
            raise FetchError(ErrorCode.FETCH_FAILED, "redirect without Location")
        return location
    if resp.status != 200:
        raise FetchError(ErrorCode.FETCH_FAILED, f"HTTP {resp.status} from {host}")
    declared = resp.getheader("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError(ErrorCode.TOO_LARGE, "media exceeds the byte limit")
    chunks, size = [], 0
    while chunk := resp.read1(64 * 1024):
        size += len(chunk)
        if size > policy.max_bytes:
            raise FetchError(ErrorCode.TOO_LARGE, "media exceeds the byte limit")
        chunks.append(chunk)
    return b"".join(chunks)
