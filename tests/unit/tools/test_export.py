"""``vidcap export``: SRT, WebVTT and JSON Lines read back by strict parsers written here."""

from __future__ import annotations

import html
import json
import re
from pathlib import Path

import pytest
from report_rows import clip, failure

from pipelines.cli import main
from pipelines.tools import export

SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
VTT_TIME = r"(\d\d):(\d\d):(\d\d)\.(\d\d\d)"
TRICKY = [
    "a <b>bold</b> claim & a <script>x</script>",
    "first line\n\n\nafter blank lines\r\nand CRLF",
    "an arrow --> inside",
    "café 日本語 ✓ — 1 < 2 > 0 &amp; already escaped",
    "12\n00:00:01,000 --> 00:00:02,000",  # looks like a cue header
]


def _seconds(match: re.Match) -> float:
    h, m, s, ms = (int(g) for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    """Strict: numbered blocks from 1, one blank line between, a timing line, non-empty text."""
    assert text.endswith("\n") and not text.endswith("\n\n\n")
    cues = []
    for n, block in enumerate(text.rstrip("\n").split("\n\n"), 1):
        index, timing, *lines = block.split("\n")
        assert index == str(n)
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", timing)
        assert m, timing
        assert lines and all(line.strip() and "-->" not in line for line in lines)
        start = _seconds(re.match(SRT_TIME, timing))
        end = _seconds(re.search(f"{SRT_TIME}$", timing))
        cues.append((start, end, "\n".join(lines)))
    return cues


def parse_vtt(text: str) -> list[tuple[str, float, float, str]]:
    """Strict: the WEBVTT header, then cues (id, timing, text) with text fully escaped."""
    header, *blocks = text.rstrip("\n").split("\n\n")
    assert header == "WEBVTT"
    cues = []
    for block in blocks:
        ident, timing, *lines = block.split("\n")
        assert "-->" not in ident and ident.strip()
        assert re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", timing), timing
        assert lines and all(line.strip() and "-->" not in line for line in lines)
        body = "\n".join(lines)
        # No raw markup: '<' never appears, and every '&' starts one of our three references.
        assert "<" not in body and ">" not in body
        assert re.fullmatch(r"([^&]|&amp;|&lt;|&gt;)*", body, re.S)
        start = _seconds(re.match(VTT_TIME, timing))
        end = _seconds(re.search(f"{VTT_TIME}$", timing))
        cues.append((ident, start, end, html.unescape(body)))
    return cues


def _non_blank_lines(text: str) -> str:
    return "\n".join(line for line in re.split(r"\r\n|\r|\n", text) if line.strip())


@pytest.fixture
def run(make_run) -> str:
    rows = [
        clip("a/b c", "/v/1.mp4", i, 10.0 * i, 10.0 * i + 10, text=t) for i, t in enumerate(TRICKY)
    ]
    rows += [
        clip("long", "/v/2.mp4", 1, 3661.5, 3671.25, text="second"),
        clip("long", "/v/2.mp4", 0, 0.0, 3661.5, text="first"),  # out of order on purpose
        clip("long", "/v/2.mp4", 2, 3671.25, 3672.0, text="  \n"),  # nothing to show: skipped
        failure("broken", "/v/3.mp4", "corrupt"),
    ]
    return make_run(rows)


def test_srt_round_trips_times_and_text(run, tmp_path):
    written = export.export(run, "srt", str(tmp_path / "srt"))
    assert sorted(Path(p).name for p in written) == [f"{export.file_stem('a/b c')}.srt", "long.srt"]
    cues = parse_srt((tmp_path / "srt" / "long.srt").read_text())
    assert cues == [(0.0, 3661.5, "first"), (3661.5, 3671.25, "second")]
    cues = parse_srt((tmp_path / "srt" / f"{export.file_stem('a/b c')}.srt").read_text())
    assert [(s, e) for s, e, _ in cues] == [(10.0 * i, 10.0 * i + 10) for i in range(len(TRICKY))]
    assert [t for _, _, t in cues] == [_non_blank_lines(t).replace("-->", "->") for t in TRICKY]


def test_vtt_round_trips_times_and_exact_text(run, tmp_path):
    export.export(run, "vtt", str(tmp_path))
    cues = parse_vtt((tmp_path / f"{export.file_stem('a/b c')}.vtt").read_text())
    assert [(s, e) for _, s, e, _ in cues] == [
        (10.0 * i, 10.0 * i + 10) for i in range(len(TRICKY))
    ]
    assert [t for *_, t in cues] == [_non_blank_lines(t) for t in TRICKY]
    assert len({ident for ident, *_ in cues}) == len(cues)
    assert "01:01:01.500 --> 01:01:11.250" in (tmp_path / "long.vtt").read_text()


def test_jsonl_is_one_object_per_clip_row(run, tmp_path):
    export.export(run, "jsonl", str(tmp_path))
    lines = (tmp_path / "long.jsonl").read_text().splitlines()
    objs = [json.loads(line) for line in lines]
    assert [(o["clip_index"], o["start_s"], o["end_s"], o["text"]) for o in objs] == [
        (0, 0.0, 3661.5, "first"),
        (1, 3661.5, 3671.25, "second"),
    ]
    assert set(objs[0]) == set(export.JSONL_FIELDS)
    tricky = [json.loads(x) for x in (tmp_path / f"{export.file_stem('a/b c')}.jsonl").open()]
    assert [o["text"] for o in tricky] == TRICKY  # verbatim: JSON needs no other escaping


def test_file_stems_are_safe_and_distinct():
    ids = ["plain-id_1.x", "a/b", "a_b", "a:b", "../../etc/passwd", "", ".hidden", "x" * 300]
    stems = [export.file_stem(i) for i in ids]
    assert stems[0] == "plain-id_1.x"
    assert len(set(stems)) == len(stems)
    assert all(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", s) and len(s) <= 100 for s in stems)


def test_cli_export(run, tmp_path, capsys):
    assert main(["export", run, "--format", "vtt"]) == 0
    assert (Path(run) / "export" / "vtt" / "long.vtt").exists()
    assert main(["export", str(tmp_path / "missing"), "--format", "srt"]) == 2
    assert "no clips/part-*.parquet" in capsys.readouterr().err


def test_several_prompts_export_together_or_one_at_a_time(make_run, tmp_path):
    rows = [
        clip("v", "/v.mp4", c, 10.0 * c, 10.0 * c + 10, prompt=p, prompt_index=i, text=f"{p}{c}")
        for c in range(2)
        for i, p in enumerate(["describe", "count"])
    ]
    run = make_run(rows)
    export.export(run, "srt", str(tmp_path / "all"))
    cues = parse_srt((tmp_path / "all" / "v.srt").read_text())
    assert [t for *_, t in cues] == ["describe0", "count0", "describe1", "count1"]
    export.export(run, "srt", str(tmp_path / "one"), prompt_index=1)
    cues = parse_srt((tmp_path / "one" / "v.srt").read_text())
    assert cues == [(0.0, 10.0, "count0"), (10.0, 20.0, "count1")]
