"""The HTML report of a real run, rendered by headless Chromium: thumbnails and captions show."""

from __future__ import annotations

import json
import os
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.cli import main
from pipelines.core.config import JobConfig
from pipelines.media import synth
from pipelines.offline.job import run_job
from pipelines.tools.report import group_videos, pick_times

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"{CHROMIUM} not found: install Debian's `chromium` package (.ci/run does)",
)


@pytest.fixture(scope="session")
def small_run(ray_session, tiny_model_dir, tmp_path_factory) -> Path:
    """Two synthetic videos and one broken file through the real job with the tiny model."""
    videos = tmp_path_factory.mktemp("report-videos")
    synth.write_video(
        videos / "square.mp4", seconds=6, fps=12, width=96, height=64, pattern="moving"
    )
    synth.write_video(videos / "counter.mkv", seconds=3, fps=10, width=64, height=64)
    synth.write_random_bytes(videos / "broken.mp4")
    out = tmp_path_factory.mktemp("report-run")
    config = JobConfig(
        inputs=[str(videos)],
        out=str(out),
        prompts=["Describe."],
        model={"model": tiny_model_dir("qwen2_vl")},
        decode={"clip_s": 3.0},
        generation={"max_new_tokens": 8},
    )
    run_job(config)
    return out


class Dom(HTMLParser):
    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.imgs: list[dict[str, str | None]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.imgs.append(dict(attrs))

    def handle_data(self, data):
        self.text.append(data)


def _chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess:
    cmd = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--hide-scrollbars", f"--user-data-dir={profile}", *args, page.as_uri(),
    ]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


@needs_chromium
def test_report_renders_in_chromium_with_thumbnails_and_captions(small_run, tmp_path):
    page = tmp_path / "report.html"
    assert main(["report", str(small_run), "--html", str(page), "--thumbs-per-video", "4"]) == 0
    rows = pq.read_table(small_run / "clips").to_pylist()
    ok = [r for r in rows if not r["error_code"]]
    assert len({r["video_id"] for r in ok}) == 2
    assert [r["error_code"] for r in rows if r["error_code"]] == ["corrupt"]

    dom = Dom(_chromium(page, tmp_path / "profile", "--dump-dom").stdout)
    thumbs = [i for i in dom.imgs if (i.get("src") or "").startswith("data:image/jpeg;base64,")]
    expected = sum(len(pick_times(v.rows, 4)) for v in group_videos(rows))
    assert len(thumbs) == len(dom.imgs) == expected >= 6  # 2 videos, a few frames per clip
    shown = " ".join(" ".join(dom.text).split())
    captions = [" ".join(r["text"].split()) for r in ok]
    assert any(captions) and all(c in shown for c in captions)
    assert "broken.mp4" in shown and "corrupt" in shown

    shot = tmp_path / "shot.png"
    _chromium(page, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400")
    rgb = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert rgb.shape[:2] == (2400, 1280)
    assert rgb.std() > 20 and len(np.unique(rgb.reshape(-1, 3), axis=0)) > 500
    # The thumbnails (colour gradients) are what makes many strongly coloured pixels; the
    # rest of the page is grey text and thin plot lines.
    saturated = (rgb.max(axis=2) - rgb.min(axis=2)) > 80
    assert saturated.sum() > 20_000


def test_export_of_a_real_run(small_run, tmp_path):
    assert main(["export", str(small_run), "--format", "jsonl", "--dest", str(tmp_path)]) == 0
    objs = [json.loads(line) for p in sorted(tmp_path.glob("*.jsonl")) for line in p.open()]
    rows = pq.read_table(small_run / "clips").to_pylist()
    assert len(objs) == sum(1 for r in rows if not r["error_code"] and r["text"].strip())
