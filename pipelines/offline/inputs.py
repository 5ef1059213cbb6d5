"""Plan the inputs: what the user typed (files, directories, globs, manifests, URIs) -> a plan.

The plan is one Arrow table (``PLAN_SCHEMA``: ``video_id``, ``source``, ``asks``), one row per
video, de-duplicated by source, in first-seen order. It is built chunk by chunk: manifests
are streamed (Parquet row groups, CSV blocks, JSONL lines) and every check is a hash
aggregation in Arrow, so planning a million rows costs seconds and ~100-200 bytes of driver
memory per video instead of a Python object graph. Nothing is stat'ed here: video keys are
computed by Ray tasks, next to the files (see ``pipelines.core.keys``).

Local paths and any URI pyarrow understands (``s3://``, ``gs://``, ``file://``, ...) are
accepted. A file named explicitly is kept even when it does not exist, so that it shows up
in the output as a ``not_found`` row instead of vanishing.
"""

from __future__ import annotations

import fnmatch
import glob
import io
import json
import os
import posixpath
from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.core.paths import filesystem_for, is_uri, video_id_for
from pipelines.core.records import Ask, VideoTask, asks_from_json, asks_to_json, numbered

VIDEO_EXTENSIONS = frozenset(
    "mp4 m4v mov mkv webm avi mpg mpeg m2v ts m2ts mts flv wmv asf ogv ogg mxf 3gp dv y4m".split()
)
MANIFEST_EXTENSIONS = frozenset({".parquet", ".jsonl", ".csv"})
GLOB_CHARS = frozenset("*?[")
# ``path`` is required; a row with ``prompt`` or ``question`` (optionally limited to
# ``start_s``..``end_s``) adds that ask to its video; ``subtitles`` (a .srt/.vtt path or URI,
# relative to the manifest like ``path``) and ``context`` (free text) go with the video.
MANIFEST_COLUMNS = (
    "path",
    "video_id",
    "prompt",
    "question",
    "start_s",
    "end_s",
    "subtitles",
    "context",
)
_MANIFEST_TYPES = {
    "path": pa.string(),
    "video_id": pa.string(),
    "prompt": pa.string(),
    "question": pa.string(),
    "start_s": pa.float64(),
    "end_s": pa.float64(),
    "subtitles": pa.string(),
    "context": pa.string(),
}
PLAN_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("source", pa.string()),
        ("asks", pa.string()),
        ("subtitles", pa.string()),
        ("context", pa.string()),
    ]
)
# Rows per chunk while reading: bounds the Python objects alive at once.
CHUNK_ROWS = 65_536
_ENTRY_SCHEMA = pa.schema(
    [
        ("source", pa.string()),
        ("video_id", pa.string()),
        ("ask", pa.string()),
        ("subtitles", pa.string()),
        ("context", pa.string()),
    ]
)


class InputError(ValueError):
    """The inputs themselves are unusable (bad manifest, nothing matched): fail at start."""


def _is_video(path: str) -> bool:
    return posixpath.splitext(path)[1].lower().lstrip(".") in VIDEO_EXTENSIONS


def _display(inner: str, original: str) -> str:
    """Give a path back in the form the user wrote: a local path, or a URI with its scheme."""
    if not is_uri(original):
        return inner
    scheme = original.split("://", 1)[0]
    return f"file://{inner}" if scheme == "file" else f"{scheme}://{inner}"


def _walk(fs: pafs.FileSystem, base: str) -> list[str]:
    # Anything with a video name that is not a folder is an input, so that an odd entry
    # (a FIFO named .mp4) becomes its own typed row instead of vanishing.
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    return sorted(i.path for i in infos if i.type != pafs.FileType.Directory and _is_video(i.path))


def _chunks(sources: Iterable[str]) -> Iterator[pa.RecordBatch]:
    """Plain sources (no id, no ask) in record batches of ``CHUNK_ROWS``."""
    chunk: list[str] = []
    for source in sources:
        chunk.append(source)
        if len(chunk) == CHUNK_ROWS:
            yield _entry_batch(chunk)
            chunk = []
    if chunk:
        yield _entry_batch(chunk)


def _entry_batch(
    sources: list[str], ids=None, asks=None, subtitles=None, context=None
) -> pa.RecordBatch:
    none = [None] * len(sources)
    columns = [sources, ids or none, asks or none, subtitles or none, context or none]
    return pa.record_batch(columns, schema=_ENTRY_SCHEMA)


def _is_file(entry: str) -> bool:
    try:
        fs, inner = filesystem_for(entry)
        return fs.get_file_info(inner).type == pafs.FileType.File
    except (OSError, ValueError):
        return False


def _expand_one(entry: str) -> Iterator[pa.RecordBatch]:
    """Record batches of (source, video_id or null, ask JSON or null) for one input."""
    ext = posixpath.splitext(entry)[1].lower()
    if ext in MANIFEST_EXTENSIONS:
        yield from _read_manifest(entry)
        return
    # An existing file whose name holds glob characters (``clip[1].mp4``) is that file.
    if GLOB_CHARS & set(entry) and not _is_file(entry):
        if is_uri(entry):
            fs, inner = filesystem_for(entry)
            base = inner.split("*")[0].rsplit("/", 1)[0]
            paths = (p for p in _walk(fs, base) if fnmatch.fnmatch(p, inner))
            yield from _chunks(_display(p, entry) for p in paths)
        else:
            paths = sorted(glob.iglob(entry, recursive=True))
            yield from _chunks(os.path.abspath(p) for p in paths if os.path.isfile(p))
        return
    try:
        fs, inner = filesystem_for(entry)
        is_dir = fs.get_file_info(inner).type == pafs.FileType.Directory
    except (OSError, ValueError):
        # No filesystem for this URI or no access: the input still gets its own row,
        # where decode says why it cannot be read.
        fs, inner, is_dir = None, entry, False
    if is_dir:
        yield from _chunks(_display(p, entry) for p in _walk(fs, inner))
    else:
        yield _entry_batch([entry if is_uri(entry) else inner])


def _manifest_batches(manifest: str, f) -> Iterator[dict[str, list]]:
    """The manifest's rows as column lists, ``CHUNK_ROWS`` at a time (never the whole file)."""
    ext = posixpath.splitext(manifest)[1].lower()
    if ext == ".parquet":
        pf = pq.ParquetFile(f)
        names = pf.schema_arrow.names
        if "path" not in names:
            raise InputError(f"manifest {manifest} has no 'path' column (columns: {names})")
        present = [c for c in MANIFEST_COLUMNS if c in names]
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS, columns=present):
            yield {c: batch.column(c).to_pylist() for c in present}
    elif ext == ".csv":
        reader = pyarrow.csv.open_csv(
            f,
            read_options=pyarrow.csv.ReadOptions(block_size=4 << 20),
            convert_options=pyarrow.csv.ConvertOptions(column_types=_MANIFEST_TYPES),
        )
        names = reader.schema.names
        if "path" not in names:
            raise InputError(f"manifest {manifest} has no 'path' column (columns: {names})")
        present = [c for c in MANIFEST_COLUMNS if c in names]
        for batch in reader:
            yield {c: batch.column(c).to_pylist() for c in present}
    else:  # JSON lines: parsed line by line, so a column may first appear on any row
        chunk: list[dict] = []
        first_chunk = True
        for n, line in enumerate(io.TextIOWrapper(f, encoding="utf-8"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"manifest {manifest}: line {n} is not JSON: {exc}") from exc
            if not isinstance(row, dict):
                raise InputError(f"manifest {manifest}: line {n} is not a JSON object")
            if not chunk and first_chunk and "path" not in row:
                raise InputError(
                    f"manifest {manifest} has no 'path' column (columns: {sorted(row)})"
                )
            chunk.append(row)
            if len(chunk) == CHUNK_ROWS:
                yield {c: [r.get(c) for r in chunk] for c in MANIFEST_COLUMNS}
                chunk, first_chunk = [], False
        if chunk:
            yield {c: [r.get(c) for r in chunk] for c in MANIFEST_COLUMNS}


def _read_manifest(manifest: str) -> Iterator[pa.RecordBatch]:
    fs, inner = filesystem_for(manifest)
    base = posixpath.dirname(inner)
    first = 0
    try:
        with fs.open_input_file(inner) as f:
            for cols in _manifest_batches(manifest, f):
                n = len(cols["path"])
                video_ids = cols.get("video_id") or [None] * n
                subs = cols.get("subtitles") or [None] * n
                contexts = cols.get("context") or [None] * n
                sources, ids, asks, subtitles = [], [], [], []
                for i in range(n):
                    path = cols["path"][i]
                    if not path:
                        raise InputError(f"manifest {manifest}: row {first + i} has an empty path")
                    sources.append(_beside(str(path), base, manifest))
                    subtitles.append(_beside(str(subs[i]), base, manifest) if subs[i] else None)
                    vid = video_ids[i]
                    ids.append(str(vid) if vid not in (None, "") else None)
                    ask = _manifest_ask(manifest, first + i, cols, i)
                    asks.append(json.dumps(ask.to_dict()) if ask is not None else None)
                first += n
                context = [str(c) if c not in (None, "") else None for c in contexts]
                yield _entry_batch(sources, ids, asks, subtitles, context)
    except (OSError, pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read manifest {manifest}: {exc}") from exc


def _beside(path: str, base: str, manifest: str) -> str:
    """Relative paths are relative to the manifest, so a manifest and its videos (and
    subtitle files) can move together."""
    if is_uri(path) or posixpath.isabs(path):
        return path
    path = posixpath.join(base, path)
    return path if not is_uri(manifest) else _display(path, manifest)


def _manifest_ask(manifest: str, row: int, cols: dict[str, list], i: int) -> Ask | None:
    prompt, question = (cols["prompt"][i] if "prompt" in cols else None), None
    if "question" in cols:
        question = cols["question"][i]
    start_s = cols["start_s"][i] if "start_s" in cols else None
    end_s = cols["end_s"][i] if "end_s" in cols else None
    if not (prompt or question or start_s is not None or end_s is not None):
        return None
    where = f"manifest {manifest}: row {row}"
    if prompt and question:
        raise InputError(f"{where} has both a prompt and a question; give one per row")
    if not question:
        if start_s is not None or end_s is not None:
            raise InputError(f"{where}: start_s/end_s only apply to a question")
        return Ask(str(prompt)) if prompt else None
    if (start_s is None) != (end_s is None):
        raise InputError(f"{where}: give both start_s and end_s, or neither")
    if start_s is not None:
        try:
            start_s, end_s = float(start_s), float(end_s)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{where}: start_s/end_s must be numbers") from exc
        if not 0 <= start_s <= end_s:
            raise InputError(f"{where}: need 0 <= start_s <= end_s (got {start_s}, {end_s})")
    return Ask(str(question), "qa", start_s, end_s)


def default_asks(prompts: Sequence[str], questions: Sequence[str] = ()) -> tuple[Ask, ...]:
    """The job-wide asks: every prompt, then every question (whole video)."""
    return numbered([Ask(p) for p in prompts] + [Ask(q, "qa") for q in questions])


def plan_inputs(entries: Iterable[str], asks: Sequence[Ask]) -> pa.Table:
    """The plan (``PLAN_SCHEMA``) for the given inputs: one row per source, first-seen order.

    A manifest may list a video on several rows, one prompt or question each: the video's
    asks are then those rows' (in order) instead of the job-wide ``asks``.
    """
    entries = list(entries)
    if not entries:
        raise InputError("no inputs given")
    batches = [b for entry in entries for b in _expand_one(entry) if b.num_rows]
    if not batches:
        raise InputError(f"no video files found in {entries}")
    table = pa.Table.from_batches(batches, schema=_ENTRY_SCHEMA)
    table = table.append_column("order", pa.array(np.arange(table.num_rows, dtype=np.int64)))
    grouped = (
        table.group_by("source", use_threads=False)
        .aggregate(
            [
                ("order", "min"),
                ("video_id", "distinct"),
                ("ask", "list"),
                ("subtitles", "distinct"),
                ("context", "distinct"),
            ]
        )
        .sort_by("order_min")
    )
    default_json = asks_to_json(asks)
    out = []
    for offset in range(0, grouped.num_rows, CHUNK_ROWS):
        part = grouped.slice(offset, CHUNK_ROWS)
        sources = part.column("source").to_pylist()
        ids = part.column("video_id_distinct").to_pylist()
        own = part.column("ask_list").to_pylist()
        subs = part.column("subtitles_distinct").to_pylist()
        texts = part.column("context_distinct").to_pylist()
        vids, asks_col = [], []
        for source, source_ids, source_asks in zip(sources, ids, own, strict=True):
            if len(source_ids) > 1:
                raise InputError(
                    f"{source} has two video ids: {source_ids[0]!r} and {source_ids[1]!r}"
                )
            vids.append(source_ids[0] if source_ids else video_id_for(source))
            listed = [a for a in source_asks if a is not None]
            if not listed:
                asks_col.append(default_json)
                continue
            if len(set(listed)) != len(listed):
                raise InputError(f"{source}: the same prompt or question is listed twice")
            asks_col.append(
                json.dumps([{**json.loads(a), "index": i} for i, a in enumerate(listed)])
            )
        out.append(
            pa.table(
                [
                    vids,
                    sources,
                    asks_col,
                    _one(sources, subs, "subtitles files"),
                    _one(sources, texts, "contexts"),
                ],
                schema=PLAN_SCHEMA,
            )
        )
    plan = pa.concat_tables(out)
    _refuse_duplicate_ids(plan)
    return plan


def _one(sources: list[str], values: list[list], what: str) -> list[str]:
    """A video's one value of a per-video manifest column ('' when none is given)."""
    out = []
    for source, distinct in zip(sources, values, strict=True):
        given = [v for v in distinct if v is not None]
        if len(given) > 1:
            raise InputError(f"{source} has two {what}: {given[0]!r} and {given[1]!r}")
        out.append(given[0] if given else "")
    return out


def _refuse_duplicate_ids(plan: pa.Table) -> None:
    counts = plan.group_by("video_id", use_threads=False).aggregate([("video_id", "count")])
    twice = counts.filter(pc.greater(counts.column("video_id_count"), 1))
    if twice.num_rows:
        vid = twice.column("video_id")[0].as_py()
        rows = plan.filter(pc.equal(plan.column("video_id"), vid))
        second = rows.column("source")[1].as_py()
        raise InputError(f"video_id {vid!r} appears twice (second time for {second})")


def plan_tasks(plan: pa.Table) -> list[VideoTask]:
    """The plan as ``VideoTask`` objects: for small inputs (tests, benchmarks, one video)."""
    return [
        VideoTask(
            r["video_id"],
            r["source"],
            asks_from_json(r["asks"]),
            subtitles=r.get("subtitles") or "",
            context=r.get("context") or "",
        )
        for r in plan.to_pylist()
    ]


def expand_inputs(entries: Iterable[str], asks: Sequence[Ask]) -> list[VideoTask]:
    """All video tasks for the given inputs (``plan_inputs`` as objects)."""
    return plan_tasks(plan_inputs(entries, asks))


def tasks_to_arrow(tasks: list[VideoTask]) -> pa.Table:
    # The schema picks the plan's columns out of each row (``video_key`` is not one).
    return pa.Table.from_pylist([t.to_row() for t in tasks], schema=PLAN_SCHEMA)
