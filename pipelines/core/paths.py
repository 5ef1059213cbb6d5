"""Where inputs and outputs live: local paths and URIs of any pyarrow filesystem."""

from __future__ import annotations

import hashlib
import os
import posixpath

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    return "://" in path


def filesystem_for(path: str) -> tuple[pafs.FileSystem, str]:
    """Return the pyarrow filesystem and the path inside it for a local path or URI."""
    if is_uri(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), os.path.abspath(path)


def video_id_for(source: str) -> str:
    """A stable, readable id: the file's stem plus a short hash of its full source."""
    stem = posixpath.splitext(posixpath.basename(source.rstrip("/")))[0] or "video"
    return f"{stem}-{hashlib.sha1(source.encode()).hexdigest()[:8]}"
