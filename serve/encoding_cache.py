"""Encoded videos kept for chat follow-ups: the next turn about the same video skips decode
and the vision encoder.

Entries are keyed by the session (``X-Session-Id`` header or the request's ``user`` field)
and the SHA-256 of the media bytes, so a follow-up hits whether the client re-sends the
video inline or by URL, and one session can never learn, from timing, what another one
sent. Requests without a session are not cached. The cache is per ingress replica and
bounded by the bytes of encoder output it holds, least recently used out first.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from pipelines.core.records import EncodedClip


class EncodingCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, EncodedClip] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    @staticmethod
    def key(session: str, media: bytes, mode: str) -> str:
        scope = hashlib.sha256(session.encode()).hexdigest()
        return f"{scope}:{mode}:{hashlib.sha256(media).hexdigest()}"

    def get(self, key: str) -> EncodedClip | None:
        with self._lock:
            clip = self._entries.get(key)
            if clip is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return clip

    def put(self, key: str, clip: EncodedClip) -> None:
        size = len(clip.encoded)
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        with self._lock:
            if key in self._entries:
                self._bytes -= len(self._entries.pop(key).encoded)
            while self._entries and self._bytes + size > self.max_bytes:
                _, old = self._entries.popitem(last=False)
                self._bytes -= len(old.encoded)
            self._entries[key] = clip
            self._bytes += size

    def stats(self) -> dict[str, int]:
        with self._lock:
            return {
                "entries": len(self._entries),
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "hits": self.hits,
                "misses": self.misses,
            }
