"""``vidcap report``: thumbnails at the sampled times, escaping, self-containment, size bound."""

from __future__ import annotations

import base64
import html
import io
import time
from fractions import Fraction
from html.parser import HTMLParser

import av
import numpy as np
import pytest
from PIL import Image
from report_rows import clip, failure

from pipelines.cli import main
from pipelines.media import synth
from pipelines.tools import report, report_figures

HOSTILE = '<script>alert(1)</script><img src=x onerror="alert(2)"> & "quoted" \'single\''
REPORT_BOUND_BYTES = 9_500_000  # the README documents "at most 9.5 MB" with the defaults


class Page(HTMLParser):
    """Tags and attributes of a report, and its visible text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def images(self) -> list[Image.Image]:
        prefix = "data:image/jpeg;base64,"
        srcs = [a["src"] for t, a in self.tags if t == "img"]
        assert all(s.startswith(prefix) for s in srcs)
        return [Image.open(io.BytesIO(base64.b64decode(s[len(prefix) :]))) for s in srcs]


@pytest.fixture(scope="module")
def index_video(tmp_path_factory) -> str:
    """10 s at 10 fps, 320x240, a keyframe every 2 s: frame i shows i in binary, at i/10 s."""
    path = tmp_path_factory.mktemp("media") / "index.mp4"
    synth.write_video(
        path, seconds=10, fps=10, width=320, height=240, codec_options={"x264-params": "keyint=20"}
    )
    return str(path)


def test_thumbnails_are_the_frames_at_the_sampled_times(index_video):
    times = [0.0, 0.3, 4.2, 4.3, 9.9, 7.0]  # unsorted, close and far (seeks) on purpose
    thumbs = report_figures.grab_thumbnails(index_video, times)
    assert not thumbs.problem
    images = [Image.open(io.BytesIO(j)) for j in thumbs.jpegs]
    assert [synth.read_index(np.asarray(im.convert("RGB"))) for im in images] == [
        round(t * 10) for t in times
    ]
    assert {im.size for im in images} == {(160, 120)}
    assert max(len(j) for j in thumbs.jpegs) <= report_figures.THUMB_MAX_BYTES


def test_rotated_source_gives_upright_thumbnail(tmp_path):
    path = tmp_path / "rot.mp4"
    synth.write_video(path, seconds=1, fps=10, width=320, height=240, rotation_deg=90)
    (jpeg,) = report_figures.grab_thumbnails(str(path), [0.5]).jpegs
    assert Image.open(io.BytesIO(jpeg)).size == (90, 120)


def test_noisy_frames_stay_under_the_thumbnail_byte_cap(tmp_path):
    path = tmp_path / "noise.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        stream.options = {"crf": "0"}
        for i in range(3):
            img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    thumbs = report_figures.grab_thumbnails(str(path), [0.0, 0.2])
    assert len(thumbs.jpegs) == 2
    assert max(len(j) for j in thumbs.jpegs) <= report_figures.THUMB_MAX_BYTES


@pytest.mark.parametrize("kind", ["missing", "corrupt", "playlist"])
def test_unreadable_source_gives_a_placeholder_that_says_why(tmp_path, kind):
    path = tmp_path / "bad.mp4"
    if kind == "corrupt":
        synth.write_random_bytes(path)
    elif kind == "playlist":
        path.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/passwd\n")
    thumbs = report_figures.grab_thumbnails(str(path), [0.0])
    code = {"missing": "not_found", "corrupt": "corrupt", "playlist": "forbidden"}[kind]
    assert not thumbs.jpegs and thumbs.problem.startswith(code)


def test_past_the_time_budget_no_source_is_opened(index_video):
    thumbs = report_figures.grab_thumbnails(index_video, [0.0], deadline=time.monotonic() - 1)
    assert not thumbs.jpegs and "time budget" in thumbs.problem


def test_report_shows_thumbnails_captions_errors_and_plot(make_run, index_video):
    rows = [
        clip(
            "idx",
            index_video,
            i,
            2.0 * i,
            2.0 * i + 2,
            frame_ts_s=[2.0 * i, 2.0 * i + 1],
            text=f"caption number {i}",
        )  # fmt: skip
        for i in range(5)
    ]
    rows += [
        clip("moved", "/nowhere/moved.mp4", 0, 0.0, 3.0, frame_ts_s=[1.0], text="still here"),
        failure("gone", "/nowhere/gone.mp4", "not_found", "no such file"),
        failure("junk", "/data/junk.mp4", "corrupt", "cannot parse container"),
    ]
    html = report.build_report(make_run(rows), thumbs_per_video=10)
    page = Page(html)
    text = " ".join(page.text)
    # 5 clips, 10 thumbnails allowed: two per clip, each the frame at its time.
    images = page.images()
    assert [synth.read_index(np.asarray(im.convert("RGB"))) for im in images] == [
        round(10 * t) for i in range(5) for t in (2.0 * i, 2.0 * i + 1)
    ]
    assert all(f"caption number {i}" in text for i in range(5)) and "still here" in text
    assert "Source not readable now" in text and "not_found: /nowhere/moved.mp4" in text
    assert "/data/junk.mp4" in text and "cannot parse container" in text
    assert [t for t, _ in page.tags].count("svg") == 1 and "polyline" in html
    assert "clips per busy second" in text and "not throughput against wall-clock" in text


def test_text_from_the_run_is_escaped(make_run):
    rows = [clip(HOSTILE, f"/x/{HOSTILE}.mp4", 0, 0.0, 1.0, frame_ts_s=[0.5], text=HOSTILE)]
    rows.append(failure("bad", f"/x/{HOSTILE}", "corrupt", HOSTILE))
    html = report.build_report(make_run(rows))
    page = Page(html)
    assert "script" not in [t for t, _ in page.tags]
    assert not [a for t, a in page.tags if t == "img"]  # the hostile <img> stayed text
    assert all(not k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert " ".join(page.text).count(HOSTILE) >= 4  # caption, id, message, and sources


def test_report_is_self_contained(make_run, index_video):
    rows = [clip("idx", index_video, 0, 0.0, 2.0, frame_ts_s=[0.0, 1.0], text="hello")]
    page = Page(report.build_report(make_run(rows)))
    csp = [a["content"] for t, a in page.tags if t == "meta" and "http-equiv" in a]
    assert csp == ["default-src 'none'; img-src data:; style-src 'unsafe-inline'"]
    for tag, attrs in page.tags:
        assert tag not in ("script", "link", "iframe", "object")
        assert attrs.get("href", "#").startswith("#")
        assert attrs.get("src", "data:").startswith("data:")


def test_report_without_summary_says_so(make_run, index_video):
    rows = [clip("idx", index_video, 0, 0.0, 2.0, frame_ts_s=[0.0], text="hello")]
    html = report.build_report(make_run(rows, summary=False))
    assert "No summary.json" in html and "hello" in html


def test_1000_videos_stay_under_the_documented_bound(make_run):
    """Worst-case text (every character escapes to 6 bytes), no readable source."""
    nasty = '"' * 3000
    rows = []
    for v in range(1000):
        vid, src = f"{nasty[:150]}{v}", f"/gone/{nasty}/{v}.mp4"
        rows += [
            clip(vid, src, c, 10.0 * c, 10.0 * c + 10, frame_ts_s=[10.0 * c + 5], text=nasty)
            for c in range(10)
        ]
        rows.append(failure(vid, src, "corrupt", nasty))
    out = make_run(rows, rows_per_shard=5000)
    start = time.perf_counter()
    html = report.build_report(out)
    elapsed = time.perf_counter() - start
    size = len(html.encode())
    bound = report.size_bound_bytes(report.DEFAULT_MAX_VIDEOS, report.DEFAULT_THUMBS_PER_VIDEO)
    print(f"1,000-video report: {size} bytes in {elapsed:.1f} s (bound {bound})")
    assert size <= bound <= REPORT_BOUND_BYTES
    assert html.count('class="ph"') == report.DEFAULT_MAX_VIDEOS
    assert "… and 0 more" not in html and "Showing the first 50 of 1000 videos" in html


def test_pick_times_spreads_a_few_per_clip():
    rows = [clip("v", "s", i, i, i + 1, frame_ts_s=[i + k / 8 for k in range(8)]) for i in range(3)]
    # 8 thumbnails for 3 clips: two per clip (first and last frame); 9: three (and the middle).
    assert report.pick_times(rows, 8) == [(i, i + k / 8) for i in range(3) for k in (0, 7)]
    assert report.pick_times(rows, 9) == [(i, i + k / 8) for i in range(3) for k in (0, 4, 7)]
    assert report.pick_times(rows, 30) == report.pick_times(rows, 9)  # a few per clip at most
    # Fewer thumbnails than clips: clips spread evenly, the middle frame of each.
    assert report.pick_times(rows, 2) == [(0, 0.5), (2, 2.5)]
    many = [clip("v", "s", i, i, i + 1, frame_ts_s=[i + 0.25, i + 0.5]) for i in range(40)]
    assert [ci for ci, _ in report.pick_times(many, 4)] == [0, 13, 26, 39]
    assert report.pick_times(many, 0) == []


@pytest.mark.parametrize("text", ['"' * 50, "é" * 50, "a&b" * 30, "plain"])
def test_esc_caps_bytes_without_breaking_an_entity(text):
    out = report.esc(text, 40)
    assert len(out.encode()) <= 40
    kept = html.unescape(out)
    assert text.startswith(kept.removesuffix("…")) and (kept == text or kept.endswith("…"))


def test_throughput_series_buckets_consecutive_clips():
    durations = {"decode": [0.5] * 250, "generate": [0.0] * 100 + [2.0] * 150}
    size, series = report_figures.throughput_series(durations, max_points=100)
    assert size == 3 and len(series["decode"]) == 84
    assert series["decode"][0] == (1.5, 2.0)  # 3 clips / 1.5 busy seconds
    assert len(series["generate"]) == 51  # buckets with no busy time have no point
    assert series["generate"][0] == (100.5, 0.75)  # clips 99-101: 3 / (0 + 2 + 2) s


def test_cli_report_writes_a_file_and_refuses_a_non_output(make_run, tmp_path, capsys):
    out = make_run([clip("v", "/gone.mp4", 0, 0.0, 1.0, frame_ts_s=[0.5], text="hi")])
    dest = tmp_path / "r.html"
    assert main(["report", out, "--html", str(dest), "--thumbs-per-video", "2"]) == 0
    assert "hi" in dest.read_text()
    assert main(["report", str(tmp_path / "nothing")]) == 2
    assert "no clips/part-*.parquet" in capsys.readouterr().err
