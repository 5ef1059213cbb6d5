"""Timed text that goes with a video: sidecar ``.srt``/``.vtt`` files and text subtitle streams.

Cues are ``Cue(start_s, end_s, text)`` with times in seconds from the video's first frame, so
``cues_in(cues, clip.start_s, clip.end_s)`` gives the text that overlaps a clip.

Bad input never raises: subtitles are optional context, so an unreadable, oversized or garbled
file gives no cues (or the cues that could be parsed) and the video is still captioned.

- Encodings: a BOM decides (UTF-8/16/32); without one, UTF-8, else cp1252 with undecodable
  bytes replaced (the usual encoding of old SRT files; it never fails).
- SRT and WebVTT share one parser: a block is a cue when one of its lines is a timing line
  (``[HH:]MM:SS[,.]mmm --> ...``, cue settings after the end time ignored); the lines after it
  are the text. WebVTT headers, NOTE, STYLE and REGION blocks have no timing line and are skipped.
- Markup is removed: HTML-like tags (``<i>``, ``<c.yellow>``, ``<00:01.000>``) and ASS override
  blocks (``{\\an8}``); ASS line breaks ``\\N`` become newlines.
- Embedded streams are opened by ``open.open_media``, under the decoder's rules (no other file or
  URL may be opened). Only text streams (subrip, mov_text, webvtt, ass/ssa) are read; FFmpeg
  hands every one of them over as ASS events, whose last field is the text. Their times are
  shifted by the video stream's start time, the decoder's time origin.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import av
import pyarrow.fs as pafs

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import MediaError
from pipelines.media.open import open_media, pick_stream, resolve

MAX_SUBTITLE_BYTES = 16 * 1024 * 1024  # a sidecar bigger than this is not a subtitle file
SIDECAR_SUFFIXES = (".srt", ".vtt")
TEXT_CODECS = frozenset({"subrip", "srt", "mov_text", "webvtt", "ass", "ssa", "text"})

_TIME = r"(?:(\d+):)?(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_TIMING = re.compile(rf"^\s*{_TIME}\s*-->\s*{_TIME}")
_TAG = re.compile(r"<[^>\n]*>|\{\\[^}\n]*\}")
_BOMS = (
    (b"\xef\xbb\xbf", "utf-8-sig"),
    (b"\xff\xfe\x00\x00", "utf-32"),
    (b"\x00\x00\xfe\xff", "utf-32"),
    (b"\xff\xfe", "utf-16"),
    (b"\xfe\xff", "utf-16"),
)


class Cue(NamedTuple):
    """One subtitle: shown from ``start_s`` to ``end_s`` (seconds from the first frame)."""

    start_s: float
    end_s: float
    text: str


def cues_in(cues: Iterable[Cue], start_s: float, end_s: float) -> str:
    """The text of the cues overlapping ``[start_s, end_s)``, in time order, one per line.

    A cue repeated back to back (roll-up captions often resend the same line) appears once.
    """
    lines: list[str] = []
    for cue in sorted(cues):
        if cue.start_s < end_s and cue.end_s > start_s and cue.text:
            if not lines or lines[-1] != cue.text:
                lines.append(cue.text)
    return "\n".join(lines)


def load_cues(
    video_path: str, filesystem: pafs.FileSystem | None = None, cfg: DecodeConfig | None = None
) -> list[Cue]:
    """Cues for a video: its sidecar file when there is one, else its embedded text streams."""
    return read_sidecar(video_path, filesystem) or read_embedded(video_path, filesystem, cfg)


def read_sidecar(video_path: str, filesystem: pafs.FileSystem | None = None) -> list[Cue]:
    """Cues from ``<stem>.srt`` or else ``<stem>.vtt`` next to the video; [] when none parses."""
    try:
        fs, fs_path = resolve(video_path, filesystem)
    except MediaError:
        return []
    stem = os.path.splitext(fs_path)[0]
    for suffix in SIDECAR_SUFFIXES:
        if cues := _read_cues(fs, stem + suffix):
            return cues
    return []


def read_subtitle_file(path: str, filesystem: pafs.FileSystem | None = None) -> list[Cue]:
    """Cues of one ``.srt``/``.vtt`` file named by path or URI (a manifest's ``subtitles``);
    [] when it is missing, too large or holds no cue."""
    try:
        fs, fs_path = resolve(path, filesystem)
    except MediaError:
        return []
    return _read_cues(fs, fs_path)


def _read_cues(fs: pafs.FileSystem, fs_path: str) -> list[Cue]:
    try:
        info = fs.get_file_info(fs_path)
        if info.type != pafs.FileType.File or (info.size or 0) > MAX_SUBTITLE_BYTES:
            return []
        with fs.open_input_stream(fs_path) as f:
            data = f.read(MAX_SUBTITLE_BYTES + 1)
    except OSError:
        return []
    return parse_subtitles(decode_text(data))


def decode_text(data: bytes) -> str:
    """Bytes of a subtitle file as text (see the module for the encoding rules); never raises."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                break
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


def parse_subtitles(text: str) -> list[Cue]:
    """Cues of an SRT or WebVTT document, sorted by start; malformed blocks are skipped."""
    cues = []
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = block.split("\n")
        for k, line in enumerate(lines):
            match = _TIMING.match(line)
            if match is None:
                continue
            start_s, end_s = _seconds(match.groups()[:4]), _seconds(match.groups()[4:])
            body = clean_text("\n".join(lines[k + 1 :]))
            if end_s > start_s and body:
                cues.append(Cue(start_s, end_s, body))
            break
    return sorted(cues)


def clean_text(text: str) -> str:
    """Subtitle markup removed, whitespace tidied, blank lines dropped."""
    text = _TAG.sub("", text.replace("\\N", "\n").replace("\\n", "\n").replace("\\h", " "))
    lines = (" ".join(line.split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def read_embedded(
    video_path: str, filesystem: pafs.FileSystem | None = None, cfg: DecodeConfig | None = None
) -> list[Cue]:
    """Cues of the first text subtitle stream inside the container; [] when there is none."""
    try:
        with open_media(video_path, cfg or DecodeConfig(), filesystem) as container:
            return _container_cues(container)
    except (MediaError, av.error.FFmpegError, OSError, ValueError):
        return []


def _container_cues(container: av.container.InputContainer) -> list[Cue]:
    streams = [
        s
        for s in container.streams.subtitles
        if s.codec_context is not None and s.codec_context.name in TEXT_CODECS
    ]
    if not streams:
        return []
    stream = streams[0]
    video = pick_stream(container)
    origin_s = (
        float(video.start_time * video.time_base)
        if video is not None and video.start_time is not None and video.time_base
        else 0.0
    )
    cues = []
    try:
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None or packet.time_base is None:
                continue
            start_s = float(packet.pts * packet.time_base) - origin_s
            subtitle_set = stream.decode2(packet)
            if subtitle_set is None:
                continue
            end_s = (
                start_s + subtitle_set.end_display_time / 1000
                if subtitle_set.end_display_time
                else start_s + float((packet.duration or 0) * packet.time_base)
            )
            text = clean_text("\n".join(_event_texts(subtitle_set.rects)))
            if end_s > start_s and text:
                cues.append(Cue(start_s, end_s, text))
    except (av.error.FFmpegError, OSError):
        pass  # a broken tail: keep the cues read so far
    return sorted(cues)


def _event_texts(rects: Sequence[object]) -> Iterable[str]:
    for rect in rects:
        dialogue = getattr(rect, "dialogue", None)  # bitmap rects have no text
        if dialogue:
            yield dialogue.decode("utf-8", errors="replace")


def _seconds(parts: Sequence[str | None]) -> float:
    hours, minutes, seconds, fraction = parts
    return (
        int(hours or 0) * 3600
        + int(minutes) * 60
        + int(seconds)
        + int(fraction) / 10 ** len(fraction)
    )
