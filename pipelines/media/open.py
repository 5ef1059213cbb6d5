"""What FFmpeg may open: the one place that resolves, checks and opens a media file.

Everything that hands a file to FFmpeg (the decoder, subtitles, report thumbnails) goes through
``open_media``, so one rule holds everywhere:

- The input is resolved to a pyarrow filesystem (local paths, ``s3://``, ``gs://``, ...) and
  stat'ed before any byte is read: missing is ``not_found``, not a regular file is
  ``unreadable``, 0 bytes is ``empty``, over ``max_file_bytes`` is ``too_large``.
- FFmpeg reads through the pyarrow file and may not open any other file or URL. Known reference
  formats (HLS, ffconcat, SDP, DASH, IMF) are refused by their first bytes with ``forbidden``;
  as a second barrier the protocol whitelist is empty, nested opens through ``io_open`` are
  refused (``forbidden``), and a container that still opens as one of those demuxers is refused
  (``forbidden``).
- Random bytes are ``corrupt``; a read error while FFmpeg parses the header is ``unreadable``.

``pick_stream`` is the decoder's choice of video stream, shared so thumbnails and subtitle times
follow the stream the job decoded.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import av
import pyarrow.fs as pafs

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError

SNIFF_BYTES = 4096
_REFERENCE_MAGIC = (b"#EXTM3U", b"ffconcat version", b"v=0")  # HLS, ffconcat, SDP: start of file
_REFERENCE_MARKERS = (b"<MPD", b"CompositionPlaylist")  # DASH, IMF: anywhere in the first bytes
_REFERENCE_DEMUXERS = frozenset({"hls", "concat", "dash", "imf", "sdp", "rtsp", "rtp"})


def resolve(path: str, filesystem: pafs.FileSystem | None = None) -> tuple[pafs.FileSystem, str]:
    """The filesystem and in-filesystem path of ``path`` (a local path or a URI)."""
    if filesystem is not None:
        return filesystem, path
    if "://" not in path:
        return pafs.LocalFileSystem(), os.path.abspath(path)
    try:
        return pafs.FileSystem.from_uri(path)
    except (OSError, ValueError) as e:  # unknown scheme, bad URI, missing credentials
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: cannot resolve filesystem: {e}") from e


def check_file(fs: pafs.FileSystem, fs_path: str, path: str, cfg: DecodeConfig) -> None:
    """Refuse, before reading a byte, a file that is missing, not regular, empty or too large."""
    try:
        info = fs.get_file_info(fs_path)
    except OSError as e:
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: {e}") from e
    if info.type == pafs.FileType.NotFound:
        raise MediaError(ErrorCode.NOT_FOUND, f"{path}: no such file")
    if info.type != pafs.FileType.File:
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: not a regular file ({info.type.name})")
    if info.size == 0:
        raise MediaError(ErrorCode.EMPTY, f"{path}: file is empty (0 bytes)")
    if info.size is not None and info.size > cfg.max_file_bytes:
        raise MediaError(
            ErrorCode.TOO_LARGE,
            f"{path}: {info.size} bytes exceeds max_file_bytes={cfg.max_file_bytes}",
        )


def is_reference_format(head: bytes) -> bool:
    """Whether a file's first bytes are a playlist or other file that points at other files."""
    head = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(_REFERENCE_MAGIC) or any(m in head for m in _REFERENCE_MARKERS)


def open_container(file: pafs.NativeFile, path: str) -> av.container.InputContainer:
    """Open an already checked file with FFmpeg, which may then open nothing else."""
    nested: list[str] = []

    def refuse_nested_open(url: str, flags: int, options: dict) -> None:
        nested.append(url)
        raise PermissionError(f"refused to open {url!r} referenced by the input")

    try:
        container = av.open(
            file,
            container_options={"protocol_whitelist": "none"},
            io_open=refuse_nested_open,
        )
    except av.error.FFmpegError as e:
        if nested:
            raise MediaError(ErrorCode.FORBIDDEN, f"{path}: references {nested[0]!r}") from e
        raise MediaError(ErrorCode.CORRUPT, f"{path}: cannot parse container: {e}") from e
    except OSError as e:  # raised by the pyarrow file while FFmpeg reads it
        if nested:
            raise MediaError(ErrorCode.FORBIDDEN, f"{path}: references {nested[0]!r}") from e
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: {e}") from e
    fmt = container.format.name
    if fmt in _REFERENCE_DEMUXERS:
        container.close()
        raise MediaError(ErrorCode.FORBIDDEN, f"{path}: {fmt} input references other files")
    return container


@contextmanager
def open_media(
    path: str, cfg: DecodeConfig, filesystem: pafs.FileSystem | None = None
) -> Iterator[av.container.InputContainer]:
    """The container of ``path``, opened under every rule of this module; closed on exit."""
    fs, fs_path = resolve(path, filesystem)
    check_file(fs, fs_path, path, cfg)
    try:
        file = fs.open_input_file(fs_path)
    except FileNotFoundError as e:
        raise MediaError(ErrorCode.NOT_FOUND, f"{path}: {e}") from e
    except OSError as e:
        raise MediaError(ErrorCode.UNREADABLE, f"{path}: {e}") from e
    with file:
        try:
            head = file.read(SNIFF_BYTES)
            file.seek(0)
        except OSError as e:
            raise MediaError(ErrorCode.UNREADABLE, f"{path}: {e}") from e
        if is_reference_format(head):
            raise MediaError(ErrorCode.FORBIDDEN, f"{path}: a playlist/reference file, not media")
        container = open_container(file, path)
        try:
            yield container
        finally:
            container.close()


def pick_stream(container: av.container.InputContainer) -> av.video.stream.VideoStream | None:
    """The video stream to decode: the first flagged *default*, else the first in which FFmpeg's
    probe saw packets, else the first; cover art (``attached_pic``) does not count."""
    videos = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    # FFmpeg sets start_time from the packets it read while probing, so a stream without one
    # may be declared but empty (hachoir's truncated WMV declares three, only one has packets).
    return min(
        videos,
        key=lambda s: (
            not s.disposition & av.stream.Disposition.default,
            s.start_time is None,
            s.index,
        ),
        default=None,
    )
