"""Fetch a media URL without letting the server be pointed at itself or its network (SSRF).

Every address a name resolves to must be public; the connection then goes to that very
checked address (the Host header and TLS SNI carry the name), so a second DNS answer
cannot swap in an internal address between the check and the connect. Redirects are
followed by hand, each hop checked again. The byte cap is enforced while streaming.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

from pipelines.errors import ErrorCode

Resolver = Callable[[str, int], Sequence[str]]


class FetchError(Exception):
    """A refused or failed fetch; ``status`` is the HTTP status our API answers with."""

    def __init__(self, code: ErrorCode, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


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


def _address_allowed(ip: str, policy: FetchPolicy) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    if any(addr in ipaddress.ip_network(net) for net in policy.allow_networks):
        return True
    # is_global excludes loopback, private, link-local (incl. 169.254.169.254 metadata),
    # shared, reserved and unspecified ranges; multicast is global but never a server.
    return addr.is_global and not addr.is_multicast


def _check_url(url: str, policy: FetchPolicy) -> tuple[str, str, int, str]:
    if "\\" in url or any(ord(c) < 0x21 for c in url):
        raise FetchError(ErrorCode.FETCH_FAILED, "URL contains backslashes or control characters")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise FetchError(ErrorCode.FETCH_FAILED, f"scheme {parts.scheme!r} is not fetched")
    if "@" in parts.netloc:
        raise FetchError(ErrorCode.FETCH_FAILED, "URLs with user info ('@') are refused")
    host = parts.hostname
    if not host:
        raise FetchError(ErrorCode.FETCH_FAILED, "URL has no host")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise FetchError(ErrorCode.FETCH_FAILED, f"bad port: {exc}") from None
    if policy.allowed_domains and not any(
        host == d or host.endswith("." + d) for d in policy.allowed_domains
    ):
        raise FetchError(ErrorCode.FETCH_FAILED, f"host {host!r} is not in the allowed domains")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, host, port, path


def _resolve_public(host: str, port: int, policy: FetchPolicy) -> str:
    try:
        ips = list(policy.resolver(host, port))
    except (OSError, UnicodeError) as exc:
        raise FetchError(ErrorCode.FETCH_FAILED, f"cannot resolve {host!r}: {exc}") from None
    if not ips:
        raise FetchError(ErrorCode.FETCH_FAILED, f"{host!r} resolves to no address")
    refused = [ip for ip in ips if not _address_allowed(ip, policy)]
    if refused:
        # One bad answer taints the name: an attacker controls which one we would use.
        raise FetchError(
            ErrorCode.FETCH_FAILED, f"{host!r} resolves to a non-public address ({refused[0]})"
        )
    return ips[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self._ip = ip

    def connect(self) -> None:
        self.sock = socket.create_connection((self._ip, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, host: str, ip: str, port: int, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._ip = ip

    def connect(self) -> None:
        raw = socket.create_connection((self._ip, self.port), self.timeout)
        self.sock = self._context.wrap_socket(raw, server_hostname=self.host)


def fetch(url: str, policy: FetchPolicy) -> bytes:
    """Return the body of ``url``, or raise FetchError; never connects to a refused address."""
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(policy.max_redirects + 1):
        scheme, host, port, path = _check_url(url, policy)
        ip = _resolve_public(host, port, policy)
        cls = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
        conn = cls(host, ip, port, timeout=max(0.1, deadline - time.monotonic()))
        try:
            conn.request("GET", path, headers={"User-Agent": "vidcap", "Accept": "*/*"})
            resp = conn.getresponse()
            if resp.status in (301, 302, 303, 307, 308):
                location = resp.getheader("Location")
                if not location:
                    raise FetchError(ErrorCode.FETCH_FAILED, "redirect without Location")
                url = urljoin(url, location)
                continue
            if resp.status != 200:
                raise FetchError(ErrorCode.FETCH_FAILED, f"HTTP {resp.status} from {host}")
            declared = resp.getheader("Content-Length")
            if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                raise FetchError(ErrorCode.TOO_LARGE, "media exceeds the byte limit", 413)
            chunks, size = [], 0
            while chunk := resp.read(64 * 1024):
                size += len(chunk)
                if size > policy.max_bytes:
                    raise FetchError(ErrorCode.TOO_LARGE, "media exceeds the byte limit", 413)
                if time.monotonic() > deadline:
                    raise FetchError(ErrorCode.FETCH_FAILED, "fetch timed out", 504)
                chunks.append(chunk)
            return b"".join(chunks)
        except (OSError, http.client.HTTPException) as exc:
            status = 504 if isinstance(exc, TimeoutError) else 400
            raise FetchError(ErrorCode.FETCH_FAILED, f"fetching {host}: {exc}", status) from None
        finally:
            conn.close()
    raise FetchError(ErrorCode.FETCH_FAILED, f"more than {policy.max_redirects} redirects")
