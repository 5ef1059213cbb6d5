"""Deterministic identities that make resume exact.

- video key: what the input *is* — path + size + mtime by default (cheap: one stat), or a
  hash of the bytes (``content``) when files may be rewritten in place with the same size
  and mtime, or copied between paths.
- run key: everything that changes the text of a row — model and revision, prompt,
  decode/sampling and generation settings, output schema. Two runs with the same run key
  produce interchangeable rows.
- work key: the video key plus what is asked of that video (its prompts and questions),
  so that a video asked new questions is new work, not "already done".
- row key: (work key, clip index, prompt index, prompt, run key).

Keys are computed in Ray tasks over batches of the plan (``raw_keys``: one batched
``get_file_info`` per filesystem), never one ``stat`` at a time on the driver. Every key is
32 hex characters, so a set of committed keys fits a sorted fixed-width numpy array
(``KeySet``: 32 bytes a key, vectorized lookups) instead of a Python set.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from pipelines.core.paths import filesystem_for, is_uri

KeyMode = Literal["stat", "content"]
KEY_BYTES = 32


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def video_keys(sources: Sequence[str], mode: KeyMode = "stat") -> list[str]:
    """One distinct key per source; a missing or unreadable file still gets a stable key.

    Two inputs with the same bytes (``content`` mode) are still two inputs: the second
    one's key also hashes its source, so each keeps its own rows.
    """
    keys = [k for k, _, _ in raw_keys(sources, mode)]
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key in seen:
            keys[i] = duplicate_key(key, sources[i])
        seen.add(keys[i])
    return keys


def duplicate_key(key: str, source: str) -> str:
    return _digest("duplicate", key, source)


class _Filesystems:
    """Filesystems by URI authority: ``FileSystem.from_uri`` once per bucket, not per file."""

    def __init__(self) -> None:
        self._by_authority: dict[str, tuple[pafs.FileSystem, str]] = {}
        self._local = pafs.LocalFileSystem()

    def split(self, source: str) -> tuple[pafs.FileSystem, str]:
        if not is_uri(source):
            return filesystem_for(source)
        scheme, rest = source.split("://", 1)
        authority = f"{scheme}://{rest.split('/', 1)[0]}"
        known = self._by_authority.get(authority)
        if known is not None and source.startswith(known[1]) and "?" not in source:
            return known[0], source[len(known[1]) :]
        fs, inner = filesystem_for(source)
        if source.endswith(inner) and "?" not in source:
            self._by_authority[authority] = (fs, source[: len(source) - len(inner)])
        return fs, inner


def raw_keys(sources: Sequence[str], mode: KeyMode = "stat") -> list[tuple[str, bool, int]]:
    """(key, missing, size in bytes) per source; ``missing``: the path certainly does not
    exist (it becomes a ``not_found`` row without a decode task).

    A source without a usable filesystem (unknown scheme, no access) still gets a stable
    key; decode reports why it cannot be read.
    """
    filesystems = _Filesystems()
    by_fs: dict[int, tuple[pafs.FileSystem, list[int], list[str]]] = {}
    out: list[tuple[str, bool, int]] = [("", False, 0)] * len(sources)
    for i, source in enumerate(sources):
        try:
            fs, path = filesystems.split(source)
        except (OSError, ValueError, pa.ArrowException):
            out[i] = (_digest("absent", source), False, 0)
            continue
        group = by_fs.setdefault(id(fs), (fs, [], []))
        group[1].append(i)
        group[2].append(path)
    for fs, indices, paths in by_fs.values():
        for i, path, info in zip(indices, paths, _infos(fs, paths), strict=True):
            out[i] = _key(fs, path, sources[i], info, mode)
    return out


def _infos(fs: pafs.FileSystem, paths: list[str]) -> list[pafs.FileInfo | None]:
    try:
        return fs.get_file_info(paths)
    except OSError:  # one unreadable path fails the batched call: fall back to one by one
        infos: list[pafs.FileInfo | None] = []
        for path in paths:
            try:
                infos.append(fs.get_file_info(path))
            except OSError:
                infos.append(None)
        return infos


def _key(
    fs: pafs.FileSystem, path: str, source: str, info: pafs.FileInfo | None, mode: KeyMode
) -> tuple[str, bool, int]:
    if info is None or info.type != pafs.FileType.File:
        missing = info is not None and info.type == pafs.FileType.NotFound
        return _digest("absent", source), missing, 0
    size = info.size or 0
    if mode == "stat":
        return _digest("stat", source, info.size, info.mtime_ns), False, size
    h = hashlib.sha256()
    try:
        with fs.open_input_stream(path) as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    except OSError:  # unreadable (permissions, I/O): decode reports it
        return _digest("absent", source), False, 0
    return _digest("content", h.hexdigest()), False, size


def run_key(settings: dict) -> str:
    return _digest("run", settings)


def work_key(video_key: str, asks: Sequence[object], subtitles: str = "", context: str = "") -> str:
    """``asks``: ``Ask`` objects or their ``to_dict()`` form (as parsed from a plan row).

    The manifest's ``subtitles`` file and ``context`` text change the prompts, so they are
    part of the work; without them the key is what it was before they existed."""
    asks = [a if isinstance(a, dict) else a.to_dict() for a in asks]
    if subtitles or context:
        return _digest("work", video_key, asks, subtitles, context)
    return _digest("work", video_key, asks)


def row_key(video_key: str, clip_index: int, prompt_index: int, prompt: str, run: str) -> str:
    # The JSON ``_digest`` would build, written directly: this runs for every output row.
    key = f'"{video_key}"' if video_key.isalnum() else json.dumps(video_key)
    parts = f'["row", {key}, {int(clip_index)}, {int(prompt_index)}, '
    text = f"{parts}{_json(prompt)}, {_json(run)}]"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@functools.lru_cache(maxsize=4096)
def _json(text: str) -> str:
    return json.dumps(text)


class KeySet:
    """A sorted array of 32-character keys with vectorized membership (10 M keys: 320 MB)."""

    def __init__(self, keys: np.ndarray) -> None:
        self.keys = np.unique(keys.astype(f"S{KEY_BYTES}"))

    @classmethod
    def from_arrays(cls, arrays: Iterable[pa.Array | pa.ChunkedArray]) -> KeySet:
        parts = [as_fixed(a) for a in arrays]
        parts = [p for p in parts if len(p)]
        return cls(np.concatenate(parts) if parts else np.empty(0, dtype=f"S{KEY_BYTES}"))

    def __len__(self) -> int:
        return len(self.keys)

    def contains(self, queries: np.ndarray) -> np.ndarray:
        """Boolean mask: which of ``queries`` (an ``S32`` array) are in the set."""
        if not len(self.keys) or not len(queries):
            return np.zeros(len(queries), dtype=bool)
        pos = np.searchsorted(self.keys, queries)
        pos[pos == len(self.keys)] = 0
        return self.keys[pos] == queries


def as_fixed(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Arrow strings of 32 characters -> a numpy ``S32`` array without Python objects."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks else pa.array([], pa.string())
    values = values.filter(pc.equal(pc.binary_length(values), KEY_BYTES))
    fixed = pc.cast(values.cast(pa.binary()), pa.binary(KEY_BYTES))
    if not len(fixed):
        return np.empty(0, dtype=f"S{KEY_BYTES}")
    data = fixed.buffers()[1]
    start = fixed.offset * KEY_BYTES
    return np.frombuffer(data, dtype=f"S{KEY_BYTES}", count=len(fixed), offset=start)
