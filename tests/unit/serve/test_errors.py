"""The error table, the error body, and slots released however a request ends."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from starlette.requests import ClientDisconnect

from pipelines.core.errors import ErrorCode, StageError
from serve.admission import Admission, SlotStream
from serve.errors import STATUS, RequestError, from_stage, limit_error


def test_every_error_code_has_a_status_and_only_documented_ones_are_used():
    assert set(STATUS) == set(ErrorCode)
    assert set(STATUS.values()) == {400, 401, 403, 404, 408, 413, 422, 429, 502, 503, 504}


def test_error_body_is_openai_shaped_json_without_local_paths():
    err = from_stage(
        StageError(ErrorCode.CORRUPT, "/tmp/vidcap-abc123.media: moov atom not found", "decode")
    )
    body = err.body()
    assert body == {
        "error": {
            "message": "decode: <path>: moov atom not found",
            "type": "invalid_request_error",
            "param": None,
            "code": "corrupt",
        }
    }
    assert err.status == 422
    event = err.sse()
    assert event.startswith("data: ") and event.endswith("\n\n")
    assert json.loads(event[len("data: ") :]) == body  # JSON, not str(dict)
    limit = from_stage(StageError(ErrorCode.LIMIT_EXCEEDED, "x exceeds limits.max_clips=4", "d"))
    assert (limit.status, limit.param) == (413, "limits.max_clips")
    assert limit_error("max_frames", 8, 9, "frames").body()["error"]["param"] == "limits.max_frames"


def test_overload_and_auth_errors_carry_their_headers():
    assert RequestError(ErrorCode.OVERLOADED, "full").headers == {"Retry-After": "1"}
    assert RequestError(ErrorCode.UNAUTHORIZED, "no").headers == {"WWW-Authenticate": "Bearer"}
    assert RequestError(ErrorCode.OVERLOADED, "full").body()["error"]["type"] == "server_error"


def test_admission_refuses_when_full_and_per_client_and_releases_once():
    adm = Admission(limit=3, per_client=2)
    a1, a2 = adm.take("a"), adm.take("a")
    with pytest.raises(RequestError) as err:
        adm.take("a")
    assert (err.value.code, err.value.status) == (ErrorCode.RATE_LIMITED, 429)
    b = adm.take("b")
    with pytest.raises(RequestError) as err:
        adm.take("c")
    assert (err.value.code, err.value.status) == (ErrorCode.OVERLOADED, 503)
    for slot in (a1, a1, a2, b, b):  # a second release of one slot is a no-op
        slot.release()
    assert adm.stats() == {"inflight": 0, "clients": 0, "limit": 3}


@pytest.mark.parametrize("ending", ["disconnect", "body_raises", "cancelled"])
def test_a_stream_releases_its_slot_and_closes_its_body_however_it_ends(ending):
    adm = Admission(limit=1, per_client=None)
    slot = adm.take("a")
    closed = []

    async def body():
        try:
            yield "data: 1\n\n"
            if ending == "body_raises":
                raise RuntimeError("the model stream broke")
            await asyncio.sleep(3600)
            yield "data: 2\n\n"
        finally:
            closed.append(True)

    async def receive():
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)
        if ending == "disconnect" and message.get("body"):
            raise OSError("client went away")

    async def run():
        response = SlotStream(body(), slot, media_type="text/event-stream")
        scope = {"type": "http", "asgi": {"spec_version": "2.4"}}
        task = asyncio.ensure_future(response(scope, receive, send))
        if ending == "cancelled":
            while len(sent) < 2:
                await asyncio.sleep(0.01)
            task.cancel()
        with contextlib.suppress(ClientDisconnect, RuntimeError, asyncio.CancelledError):
            await task

    asyncio.run(run())
    assert adm.inflight == 0 and closed == [True]
