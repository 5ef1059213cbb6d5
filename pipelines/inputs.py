"""Expand what the user typed (files, directories, globs, manifests, URIs) into video tasks.

Local paths and any URI pyarrow understands (``s3://``, ``gs://``, ``file://``, ...) are
accepted. A file named explicitly is kept even when it does not exist, so that it shows up
in the output as a ``not_found`` row instead of vanishing.
"""

from __future__ import annotations

import fnmatch
import glob
import hashlib
import os
import posixpath
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.csv
import pyarrow.fs as pafs
import pyarrow.json
import pyarrow.parquet as pq

from pipelines.records import VideoTask

VIDEO_EXTENSIONS = frozenset(
    "mp4 m4v mov mkv webm avi mpg mpeg m2v ts m2ts mts flv wmv asf ogv ogg mxf 3gp dv y4m".split()
)
MANIFEST_READERS = {
    ".parquet": lambda f: pq.read_table(f),
    ".jsonl": lambda f: pyarrow.json.read_json(f),
    ".csv": lambda f: pyarrow.csv.read_csv(f),
}
GLOB_CHARS = frozenset("*?[")


class InputError(ValueError):
    """The inputs themselves are unusable (bad manifest, nothing matched): fail at start."""


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


def _is_video(path: str) -> bool:
    return posixpath.splitext(path)[1].lower().lstrip(".") in VIDEO_EXTENSIONS


def _display(inner: str, original: str) -> str:
    """Give a path back in the form the user wrote: a local path, or a URI with its scheme."""
    if not is_uri(original):
        return inner
    scheme = original.split("://", 1)[0]
    return f"file://{inner}" if scheme == "file" else f"{scheme}://{inner}"


def _walk(fs: pafs.FileSystem, base: str) -> list[str]:
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return sorted(i.path for i in infos if i.type == pafs.FileType.File and _is_video(i.path))


def _expand_one(entry: str) -> Iterator[tuple[str, str | None, str | None]]:
    """Yield (source, video_id or None, prompt or None) for one command-line input."""
    ext = posixpath.splitext(entry)[1].lower()
    if ext in MANIFEST_READERS:
        yield from _read_manifest(entry)
        return
    if GLOB_CHARS & set(entry):
        if is_uri(entry):
            fs, inner = filesystem_for(entry)
            base = inner.split("*")[0].rsplit("/", 1)[0]
            for path in _walk(fs, base):
                if fnmatch.fnmatch(path, inner):
                    yield _display(path, entry), None, None
        else:
            for path in sorted(glob.glob(entry, recursive=True)):
                if os.path.isfile(path):
                    yield os.path.abspath(path), None, None
        return
    fs, inner = filesystem_for(entry)
    if fs.get_file_info(inner).type == pafs.FileType.Directory:
        for path in _walk(fs, inner):
            yield _display(path, entry), None, None
    else:
        yield (entry if is_uri(entry) else inner), None, None


def _read_manifest(manifest: str) -> Iterator[tuple[str, str | None, str | None]]:
    fs, inner = filesystem_for(manifest)
    try:
        with fs.open_input_file(inner) as f:
            table = MANIFEST_READERS[posixpath.splitext(inner)[1].lower()](f)
    except (OSError, pa.ArrowInvalid) as exc:
        raise InputError(f"cannot read manifest {manifest}: {exc}") from exc
    if "path" not in table.column_names:
        raise InputError(
            f"manifest {manifest} has no 'path' column (columns: {table.column_names})"
        )
    base = posixpath.dirname(inner)
    cols = {
        c: table.column(c).to_pylist()
        for c in ("path", "video_id", "prompt")
        if c in table.column_names
    }
    for i, path in enumerate(cols["path"]):
        if not path:
            raise InputError(f"manifest {manifest}: row {i} has an empty path")
        if not is_uri(path) and not posixpath.isabs(path):
            # Relative paths are relative to the manifest, so a manifest and its videos
            # can move together.
            path = posixpath.join(base, path)
            path = path if not is_uri(manifest) else _display(path, manifest)
        vid = cols.get("video_id", [None] * len(cols["path"]))[i]
        prompt = cols.get("prompt", [None] * len(cols["path"]))[i]
        yield path, (str(vid) if vid else None), (str(prompt) if prompt else None)


def tasks_to_arrow(tasks: list[VideoTask]) -> pa.Table:
    return pa.Table.from_pylist([t.to_row() for t in tasks])


def expand_inputs(entries: Iterable[str], default_prompt: str) -> list[VideoTask]:
    """All video tasks for the given inputs, de-duplicated by source, in a stable order."""
    tasks: list[VideoTask] = []
    seen_sources: set[str] = set()
    seen_ids: set[str] = set()
    entries = list(entries)
    if not entries:
        raise InputError("no inputs given")
    for entry in entries:
        for source, vid, prompt in _expand_one(entry):
            if source in seen_sources:
                continue
            vid = vid or video_id_for(source)
            if vid in seen_ids:
                raise InputError(f"video_id {vid!r} appears twice (second time for {source})")
            seen_sources.add(source)
            seen_ids.add(vid)
            tasks.append(VideoTask(vid, source, prompt or default_prompt))
    if not tasks:
        raise InputError(f"no video files found in {entries}")
    return tasks
