"""Turn a request's media reference (data URL, http(s) URL, local path) into bytes."""

from __future__ import annotations

import base64
import binascii
import os
import stat
from urllib.parse import unquote, urlsplit

from pipelines.core.errors import ErrorCode
from serve.config import SecurityConfig
from serve.fetch import FetchError, FetchPolicy, fetch


def policy_for(security: SecurityConfig) -> FetchPolicy:
    return FetchPolicy(
        max_bytes=security.max_fetch_bytes,
        timeout_s=security.fetch_timeout_s,
        allowed_domains=security.allowed_domains,
        allow_networks=security.allow_networks,
    )


def _data_url(url: str, max_bytes: int) -> bytes:
    header, sep, payload = url.partition(",")
    if not sep or not header.endswith(";base64"):
        raise FetchError(ErrorCode.INVALID_REQUEST, "data URLs must be base64 encoded")
    if len(payload) * 3 // 4 > max_bytes:
        raise FetchError(ErrorCode.TOO_LARGE, "media exceeds the byte limit")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise FetchError(ErrorCode.INVALID_REQUEST, "data URL is not valid base64") from None


def _local(path: str, security: SecurityConfig) -> bytes:
    if not security.media_dir:
        raise FetchError(ErrorCode.FORBIDDEN, "local paths are disabled (no media_dir configured)")
    if "\x00" in path:
        raise FetchError(ErrorCode.INVALID_REQUEST, "path contains a NUL byte")
    root = os.path.realpath(security.media_dir)
    # realpath resolves '..' and symlinks, so neither can lead out of the media dir.
    real = os.path.realpath(os.path.join(root, path))
    if os.path.commonpath([root, real]) != root:
        raise FetchError(ErrorCode.FORBIDDEN, "path is outside the allowed media directory")
    try:
        # O_NONBLOCK: opening a FIFO (or a device) must not wait for a writer forever; it
        # is refused below, before any read, as every file that is not a regular one.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise FetchError(ErrorCode.NOT_FOUND, "no such file in the media directory") from None
    except OSError as exc:
        raise FetchError(ErrorCode.UNREADABLE, f"cannot open file: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise FetchError(ErrorCode.FORBIDDEN, "only regular files are served")
        if info.st_size > security.max_fetch_bytes:
            raise FetchError(ErrorCode.TOO_LARGE, "media exceeds the byte limit")
        try:
            return f.read(security.max_fetch_bytes + 1)[: security.max_fetch_bytes]
        except OSError as exc:
            raise FetchError(ErrorCode.UNREADABLE, f"cannot read file: {exc.strerror}") from None


def load_media(url: str, security: SecurityConfig, policy: FetchPolicy | None = None) -> bytes:
    """Bytes of the media at ``url``; raises FetchError with the code (and so the status)."""
    try:
        has_scheme = "://" in url or url.startswith("data:")
        scheme = urlsplit(url).scheme.lower() if has_scheme else ""
    except ValueError:
        raise FetchError(ErrorCode.INVALID_REQUEST, "URL cannot be parsed") from None
    if scheme == "data":
        return _data_url(url, security.max_body_bytes)
    if scheme in ("http", "https"):
        return fetch(url, policy or policy_for(security))
    if scheme == "file":
        return _local(unquote(urlsplit(url).path), security)
    if scheme:
        raise FetchError(ErrorCode.FORBIDDEN, f"scheme {scheme[:16]!r} is not supported")
    return _local(url, security)
