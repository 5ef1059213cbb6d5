"""The endpoint over real HTTP on loopback: same stages as offline, OpenAI wire format."""

from __future__ import annotations

import base64
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow.parquet as pq
import pytest
import requests

from pipelines.core.config import JobConfig
from pipelines.core.output import COLUMNS
from pipelines.media import synth
from pipelines.offline.job import run_job

PROMPT = "What happens?"
MAX_TOKENS = 6
SMALL = {"num_cpus": 0.25}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _data_url(path, mime="video/mp4") -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _chat(video_url: str, prompt: str = PROMPT, kind: str = "video_url", **extra) -> dict:
    return {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": kind, kind: {"url": video_url}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "max_tokens": MAX_TOKENS,
        **extra,
    }


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("serve-media")
    synth.write_video(
        root / "short.mp4", seconds=3.0, fps=10.0, width=64, height=64, pattern="moving"
    )
    synth.write_video(root / "twelve.mp4", seconds=12.0, fps=10.0, width=64, height=48)
    synth.write_random_bytes(root / "random.mp4")
    synth.write_zero_bytes(root / "zero.mp4")
    from PIL import Image

    Image.fromarray(np.full((40, 60, 3), 200, np.uint8)).save(root / "still.png")
    return root


@pytest.fixture(scope="module")
def endpoint(serve_url, tiny_model_dir, media):
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    model = {"model": tiny_model_dir("qwen2_vl")}
    config = ServeConfig(
        model=model,
        prompt=PROMPT,
        generation={"max_new_tokens": MAX_TOKENS},
        security={"media_dir": str(media), "max_body_bytes": 2 * 1024**2},
        ingress=SMALL,
        decoder=SMALL,
        encoder=SMALL,
        lm=SMALL,
    )
    serve.run(build_app(config), name="vidcap", route_prefix="/")
    yield serve_url, config
    serve.delete("vidcap")


@pytest.fixture(scope="module")
def offline(ray_session, tiny_model_dir, media, tmp_path_factory):
    """The offline job's rows for the same videos, prompt and model."""
    out = tmp_path_factory.mktemp("offline")
    config = JobConfig(
        inputs=[str(media / "short.mp4"), str(media / "twelve.mp4")],
        out=str(out),
        prompts=[PROMPT],
        model={"model": tiny_model_dir("qwen2_vl")},
        generation={"max_new_tokens": MAX_TOKENS},
    )
    run_job(config)
    rows = pq.read_table(out / "clips").to_pylist()
    return {(r["source"].rsplit("/", 1)[1], r["clip_index"]): r for r in rows}


def test_health_ready_models(endpoint):
    url, config = endpoint
    assert requests.get(f"{url}/healthz", timeout=10).json() == {"status": "ok"}
    assert requests.get(f"{url}/readyz", timeout=10).status_code == 200
    models = requests.get(f"{url}/v1/models", timeout=10).json()
    assert [m["id"] for m in models["data"]] == [config.model_name]


def test_chat_completion_matches_offline_text(endpoint, media, offline):
    url, _ = endpoint
    r = requests.post(
        f"{url}/v1/chat/completions", json=_chat(_data_url(media / "short.mp4")), timeout=60
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion"
    text = body["choices"][0]["message"]["content"]
    row = offline[("short.mp4", 0)]
    assert text == row["text"] and text
    assert body["usage"] == {
        "prompt_tokens": row["prompt_tokens"],
        "completion_tokens": row["output_tokens"],
        "total_tokens": row["prompt_tokens"] + row["output_tokens"],
    }


def test_streaming_gives_the_same_text_as_a_whole_answer(endpoint, media):
    url, _ = endpoint
    payload = _chat(_data_url(media / "short.mp4"))
    whole = requests.post(f"{url}/v1/chat/completions", json=payload, timeout=60).json()
    r = requests.post(
        f"{url}/v1/chat/completions",
        stream=True,
        timeout=60,
        json={**payload, "stream": True, "stream_options": {"include_usage": True}},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [
        line[len("data: ") :]
        for line in r.iter_lines(decode_unicode=True)
        if line.startswith("data: ")
    ]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert streamed == whole["choices"][0]["message"]["content"]
    assert len([c for c in chunks if c["choices"][0]["delta"].get("content")]) > 1
    assert chunks[-1]["usage"] == whole["usage"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def _encoder_batches() -> int:
    from ray import serve

    handle = serve.get_deployment_handle("Encoder", app_name="vidcap")
    return handle.stats.remote().result()["batches"]


def test_follow_up_turns_reuse_the_session_encoding(endpoint, media):
    url, _ = endpoint
    first = _chat(_data_url(media / "short.mp4"))

    def post(payload, session=None):
        headers = {"X-Session-Id": session} if session else {}
        before = _encoder_batches()
        r = requests.post(f"{url}/v1/chat/completions", json=payload, headers=headers, timeout=60)
        assert r.status_code == 200, r.text
        # Whether the cache hit is not disclosed: it would tell one client what another sent.
        assert "X-Vidcap-Encoding-Cache" not in r.headers
        return _encoder_batches() > before, r.json()

    encoded, answer = post(first, "session-a")
    assert encoded
    follow = {
        **first,
        "messages": [
            *first["messages"],
            {"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
            {"role": "user", "content": "And what happens after that?"},
        ],
    }
    encoded, hit = post(follow, "session-a")
    assert not encoded  # no decode, no encoder call
    # Same answer as encoding afresh (another session; no session at all).
    for session in ("session-b", None):
        encoded, fresh = post(follow, session)
        assert encoded
        assert fresh["choices"][0]["message"] == hit["choices"][0]["message"]
        assert fresh["usage"] == hit["usage"]
    # The history is part of the prompt.
    alone = {**first, "messages": [follow["messages"][0], follow["messages"][-1]]}
    _, single = post(alone)
    assert hit["usage"]["prompt_tokens"] > single["usage"]["prompt_tokens"]
    # The OpenAI ``user`` field names a session too.
    encoded, _ = post({**follow, "user": "session-a"})
    assert not encoded


def test_image_url_is_a_one_frame_video(endpoint, media):
    url, _ = endpoint
    r = requests.post(
        f"{url}/v1/chat/completions",
        timeout=60,
        json=_chat(_data_url(media / "still.png", "image/png"), kind="image_url"),
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"]


def test_captions_upload_matches_offline_rows(endpoint, media, offline):
    url, _ = endpoint
    with open(media / "twelve.mp4", "rb") as f:
        r = requests.post(
            f"{url}/v1/captions",
            files={"file": ("twelve.mp4", f, "video/mp4")},
            data={"prompt": PROMPT},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    clips = r.json()["clips"]
    assert [(c["clip_index"], c["start_s"], c["end_s"]) for c in clips] == [
        (0, 0.0, 10.0),
        (1, 10.0, 12.0),
    ]
    assert all(list(c) == [name for name, _, _ in COLUMNS] for c in clips)
    for c in clips:
        off = offline[("twelve.mp4", c["clip_index"])]
        assert (c["text"], c["frame_ts_s"], c["prompt_tokens"]) == (
            off["text"],
            off["frame_ts_s"],
            off["prompt_tokens"],
        )
        assert c["source"] == "twelve.mp4" and c["error_code"] == ""


def test_captions_by_path_only_inside_media_dir(endpoint, media):
    url, _ = endpoint
    ok = requests.post(f"{url}/v1/captions", json={"url": "short.mp4"}, timeout=60)
    assert ok.status_code == 200 and len(ok.json()["clips"]) == 1
    bad = requests.post(f"{url}/v1/captions", json={"url": "../../etc/passwd"}, timeout=60)
    assert bad.status_code == 403 and bad.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize(
    "target, status, code",
    [
        ("http://127.0.0.1:9/x.mp4", 403, "forbidden"),
        ("http://10.0.0.8/x.mp4", 403, "forbidden"),
        ("http://169.254.169.254/latest/meta-data/", 403, "forbidden"),
        ("http://[::1]/x.mp4", 403, "forbidden"),
        ("http://example.com\\@127.0.0.1/x.mp4", 400, "invalid_request"),
    ],
)
def test_ssrf_targets_are_refused(endpoint, target, status, code):
    url, _ = endpoint
    r = requests.post(f"{url}/v1/chat/completions", json=_chat(target), timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


@pytest.mark.parametrize(
    "name, status, code",
    [
        ("random.mp4", 422, "corrupt"),
        ("zero.mp4", 422, "empty"),
    ],
)
def test_bad_media_is_a_4xx_with_our_code(endpoint, media, name, status, code):
    url, _ = endpoint
    r = requests.post(f"{url}/v1/chat/completions", json=_chat(_data_url(media / name)), timeout=30)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


def test_malformed_requests_are_4xx_never_500(endpoint, media):
    url, _ = endpoint
    post = lambda **kw: requests.post(f"{url}/v1/chat/completions", timeout=30, **kw)  # noqa: E731
    assert post(data=b"{not json", headers={"Content-Type": "application/json"}).status_code == 400
    no_video = {"messages": [{"role": "user", "content": "hi"}]}
    assert post(json=no_video).json()["error"]["code"] == "invalid_request"
    assert post(json={**_chat("short.mp4"), "model": "other"}).status_code == 404
    assert post(json={**_chat("short.mp4"), "max_tokens": 0}).status_code == 400
    big = _chat("data:video/mp4;base64," + "A" * (3 * 1024**2))
    r = post(json=big)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"


@pytest.fixture(scope="module")
def tight(endpoint, tiny_model_dir):
    """A second app with a small queue, an API key and a fast autoscaler on the LM."""
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    url, _ = endpoint
    lm = {
        **SMALL,
        "min_replicas": 1,
        "max_replicas": 2,
        # Generation is short next to decode + encode here, so the LM of an admitted request
        # is busy only part of its time: a low target makes the sustained load scale it.
        "target_ongoing_requests": 0.25,
        "max_ongoing_requests": 1,
        "max_queued_requests": 2,
        "upscale_delay_s": 0.5,
        "downscale_delay_s": 2.0,
        "max_batch_size": 1,
    }
    config = ServeConfig(
        model={"model": tiny_model_dir("qwen2_vl")},
        generation={"max_new_tokens": 48},
        security={"api_key": "sekrit"},
        ingress=SMALL,
        decoder=SMALL,
        encoder=SMALL,
        lm=lm,
    )
    serve.run(build_app(config), name="tight", route_prefix="/tight")
    yield f"{url}/tight"
    serve.delete("tight")


def _lm_replicas(app: str) -> int:
    from ray import serve

    deployment = serve.status().applications[app].deployments["LanguageModel"]
    return deployment.replica_states.get("RUNNING", 0)


def test_api_key_is_required_when_configured(tight, media):
    payload = _chat(_data_url(media / "short.mp4"), max_tokens=2)
    assert (
        requests.post(f"{tight}/v1/chat/completions", json=payload, timeout=30).status_code == 401
    )
    ok = requests.post(
        f"{tight}/v1/chat/completions",
        json=payload,
        timeout=60,
        headers={"Authorization": "Bearer sekrit"},
    )
    assert ok.status_code == 200


@pytest.mark.slow
def test_overload_is_503_and_lm_scales_up_then_down(tight, media):
    payload = _chat(_data_url(media / "short.mp4"), max_tokens=48)
    auth = {"Authorization": "Bearer sekrit"}

    def call(_):
        r = requests.post(f"{tight}/v1/chat/completions", json=payload, headers=auth, timeout=120)
        return r.status_code, r.headers.get("Retry-After")

    with ThreadPoolExecutor(16) as pool:
        burst = list(pool.map(call, range(16)))
    codes = [c for c, _ in burst]
    assert set(codes) <= {200, 503} and 503 in codes and 200 in codes
    assert all(ra == "1" for c, ra in burst if c == 503)

    # Sustained load above the target of 0.25 ongoing requests per replica: 1 -> 2 replicas.
    deadline, peak = time.monotonic() + 60, _lm_replicas("tight")
    with ThreadPoolExecutor(3) as pool:
        while time.monotonic() < deadline and peak < 2:
            list(pool.map(call, range(3)))
            peak = max(peak, _lm_replicas("tight"))
    assert peak == 2
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _lm_replicas("tight") > 1:
        time.sleep(1)
    assert _lm_replicas("tight") == 1


@pytest.mark.slow
def test_vidcap_serve_command_answers_on_loopback(tiny_model_dir, media):
    """What a user runs: `vidcap serve --model DIR` in its own process and its own Ray."""
    import os
    import subprocess
    import sys

    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipelines.cli",
            "serve",
            "--model",
            tiny_model_dir("qwen2_vl"),
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except requests.RequestException:  # not listening yet, or routes not ready
                pass
            time.sleep(1)
        r = requests.post(
            f"{url}/v1/chat/completions", json=_chat(_data_url(media / "short.mp4")), timeout=60
        )
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"]
    finally:
        proc.terminate()
        proc.wait(timeout=60)
