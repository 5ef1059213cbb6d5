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
from collections.abc import Iterable, Iterator, Sequence

import pyarrow as pa
import pyarrow.csv
import pyarrow.fs as pafs
import pyarrow.json
import pyarrow.parquet as pq

from pipelines.records import Ask, VideoTask, numbered

VIDEO_EXTENSIONS = frozenset(
    "mp4 m4v mov mkv webm avi mpg mpeg m2v ts m2ts mts flv wmv asf ogv ogg mxf 3gp dv y4m".split()
)
MANIFEST_READERS = {
    ".parquet": lambda f: pq.read_table(f),
    ".jsonl": lambda f: pyarrow.json.read_json(f),
    ".csv": lambda f: pyarrow.csv.read_csv(f),
}
GLOB_CHARS = frozenset("*?[")
# ``path`` is required; a row with ``prompt`` or ``question`` (optionally limited to
# ``start_s``..``end_s``) adds that ask to its video.
MANIFEST_COLUMNS = ("path", "video_id", "prompt", "question", "start_s", "end_s")


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


Entry = tuple[str, str | None, Ask | None]


def _expand_one(entry: str) -> Iterator[Entry]:
    """Yield (source, video_id or None, ask or None) for one command-line input."""
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


def _read_manifest(manifest: str) -> Iterator[Entry]:
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
    n = table.num_rows
    cols = {
        c: table.column(c).to_pylist() if c in table.column_names else [None] * n
        for c in MANIFEST_COLUMNS
    }
    for i, path in enumerate(cols["path"]):
        if not path:
            raise InputError(f"manifest {manifest}: row {i} has an empty path")
        if not is_uri(path) and not posixpath.isabs(path):
            # Relative paths are relative to the manifest, so a manifest and its videos
            # can move together.
            path = posixpath.join(base, path)
            path = path if not is_uri(manifest) else _display(path, manifest)
        vid = cols["video_id"][i]
        yield path, (str(vid) if vid else None), _manifest_ask(manifest, i, cols)


def _manifest_ask(manifest: str, i: int, cols: dict[str, list]) -> Ask | None:
    prompt, question = cols["prompt"][i], cols["question"][i]
    start_s, end_s = cols["start_s"][i], cols["end_s"][i]
    where = f"manifest {manifest}: row {i}"
    if prompt and question:
        raise InputError(f"{where} has both a prompt and a question; give one per row")
    if not question:
        if start_s is not None or end_s is not None:
            raise InputError(f"{where}: start_s/end_s only apply to a question")
        return Ask(str(prompt)) if prompt else None
    if (start_s is None) != (end_s is None):
        raise InputError(f"{where}: give both start_s and end_s, or neither")
    if start_s is not None:
        start_s, end_s = float(start_s), float(end_s)
        if not 0 <= start_s <= end_s:
            raise InputError(f"{where}: need 0 <= start_s <= end_s (got {start_s}, {end_s})")
    return Ask(str(question), "qa", start_s, end_s)


def tasks_to_arrow(tasks: list[VideoTask]) -> pa.Table:
    return pa.Table.from_pylist([t.to_row() for t in tasks])


def default_asks(prompts: Sequence[str], questions: Sequence[str] = ()) -> tuple[Ask, ...]:
    """The job-wide asks: every prompt, then every question (whole video)."""
    return numbered([Ask(p) for p in prompts] + [Ask(q, "qa") for q in questions])


def expand_inputs(entries: Iterable[str], asks: Sequence[Ask]) -> list[VideoTask]:
    """All video tasks for the given inputs, de-duplicated by source, in a stable order.

    A manifest may list a video on several rows, one prompt or question each: the video's
    asks are then those rows' (in order) instead of the job-wide ``asks``.
    """
    ids: dict[str, str] = {}  # source -> video id, in first-seen order
    own: dict[str, list[Ask]] = {}
    entries = list(entries)
    if not entries:
        raise InputError("no inputs given")
    for entry in entries:
        for source, vid, ask in _expand_one(entry):
            if source not in ids:
                vid = vid or video_id_for(source)
                if vid in ids.values():
                    raise InputError(f"video_id {vid!r} appears twice (second time for {source})")
                ids[source] = vid
            elif vid and vid != ids[source]:
                raise InputError(f"{source} has two video ids: {ids[source]!r} and {vid!r}")
            if ask is not None:
                listed = own.setdefault(source, [])
                if ask in listed:
                    raise InputError(f"{source}: the same prompt or question is listed twice")
                listed.append(ask)
    if not ids:
        raise InputError(f"no video files found in {entries}")
    return [
        VideoTask(vid, source, numbered(own[source]) if source in own else tuple(asks))
        for source, vid in ids.items()
    ]
