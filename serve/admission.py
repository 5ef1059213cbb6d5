"""Admission: how many requests one ingress replica lets into the model pipeline at once.

A slot is released exactly once, however its request ends: answered, refused, cancelled
because the client went away, or in the middle of a stream. A streamed answer holds its
slot until the ASGI call that sends it returns, not until a background task that Starlette
skips when the client disconnects or the body iterator raises.
"""

from __future__ import annotations

import hashlib
from collections import Counter

from fastapi import Request
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from pipelines.core.errors import ErrorCode
from serve.errors import RequestError, overloaded


def principal(request: Request, api_key_set: bool) -> str:
    """Who holds a slot or a cache entry: the bearer token's hash, else the peer address."""
    if api_key_set:
        token = request.headers.get("authorization", "")
        return "key:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return "addr:" + (request.client.host if request.client else "?")


class Slot:
    def __init__(self, admission: Admission, who: str) -> None:
        self._admission, self._who, self._held = admission, who, True

    def release(self) -> None:
        if self._held:
            self._held = False
            self._admission._release(self._who)


class Admission:
    def __init__(self, limit: int, per_client: int | None) -> None:
        self.limit, self.per_client = limit, per_client
        self.inflight = 0
        self._by_client: Counter[str] = Counter()

    def full(self) -> bool:
        return self.inflight >= self.limit

    def take(self, who: str) -> Slot:
        """A slot for ``who``, or 503 (server full) / 429 (this client holds its share)."""
        if self.full():
            raise overloaded()
        if self.per_client is not None and self._by_client[who] >= self.per_client:
            raise RequestError(
                ErrorCode.RATE_LIMITED,
                f"this client already has {self.per_client} requests in flight "
                f"(limits.max_inflight_per_client)",
                param="limits.max_inflight_per_client",
            )
        self.inflight += 1
        self._by_client[who] += 1
        return Slot(self, who)

    def _release(self, who: str) -> None:
        self.inflight -= 1
        self._by_client[who] -= 1
        if self._by_client[who] <= 0:
            del self._by_client[who]

    def stats(self) -> dict:
        return {"inflight": self.inflight, "clients": len(self._by_client), "limit": self.limit}


class SlotStream(StreamingResponse):
    """A streaming response that releases its slot and closes its body when the send ends."""

    def __init__(self, content, slot: Slot, **kwargs) -> None:
        super().__init__(content, **kwargs)
        self._slot, self._content = slot, content

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slot.release()
            # Closing the generator runs its ``finally``, which cancels the LM's stream.
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()
