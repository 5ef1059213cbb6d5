"""Every model family runs through the same two-stage graph offline and online, with the
same text both ways. The cases are the registry's tiny models (every family, every variant),
so a new family is covered without touching this file."""

from __future__ import annotations

import base64

import pyarrow.parquet as pq
import pytest
import requests

from pipelines.core.config import JobConfig
from pipelines.media import synth
from pipelines.models import tiny_cases
from pipelines.offline.job import run_job

SMALL = {"num_cpus": 0.25}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("fam") / "clip.mp4"
    synth.write_video(path, seconds=3.0, fps=10.0, width=64, height=64, pattern="moving")
    return path


@pytest.mark.parametrize("case", tiny_cases(), ids=lambda c: c.id)
def test_family_runs_offline_and_online_with_the_same_text(
    case, video, tiny_model_dir, serve_url, tmp_path
):
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    model = {"model": tiny_model_dir(case.model_type, **case.kwargs)}
    generation = {"max_new_tokens": 6}
    run_job(
        JobConfig(
            inputs=[str(video)],
            out=str(tmp_path),
            prompts=["Describe."],
            model=model,
            generation=generation,
        )
    )
    [row] = pq.read_table(tmp_path / "clips").to_pylist()
    assert row["error_code"] == "" and row["text"], row
    assert 1 <= row["output_tokens"] <= 6

    config = ServeConfig(
        model=model, generation=generation, ingress=SMALL, decoder=SMALL, encoder=SMALL, lm=SMALL
    )
    serve.run(build_app(config), name="family", route_prefix="/family")
    try:
        url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
        body = {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "video_url", "video_url": {"url": url}},
                        {"type": "text", "text": "Describe."},
                    ],
                }
            ],
            "max_tokens": 6,
        }
        r = requests.post(f"{serve_url}/family/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] == row["text"]
        assert r.json()["usage"]["completion_tokens"] == row["output_tokens"]
    finally:
        serve.delete("family")
