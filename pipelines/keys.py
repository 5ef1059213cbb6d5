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
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Literal

import pyarrow.fs as pafs

from pipelines.inputs import filesystem_for

KeyMode = Literal["stat", "content"]


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def video_keys(sources: Sequence[str], mode: KeyMode = "stat") -> list[str]:
    """One distinct key per source; a missing or unreadable file still gets a stable key.

    Two inputs with the same bytes (``content`` mode) are still two inputs: the second
    one's key also hashes its source, so each keeps its own rows.
    """
    keys = _raw_keys(sources, mode)
    seen: set[str] = set()
    for i, key in enumerate(keys):
        if key in seen:
            keys[i] = _digest("duplicate", key, sources[i])
        seen.add(keys[i])
    return keys


def _raw_keys(sources: Sequence[str], mode: KeyMode) -> list[str]:
    keys = []
    for source in sources:
        fs, path = filesystem_for(source)
        info = fs.get_file_info(path)
        if info.type != pafs.FileType.File:
            keys.append(_digest("absent", source))
        elif mode == "content":
            h = hashlib.sha256()
            with fs.open_input_stream(path) as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            keys.append(_digest("content", h.hexdigest()))
        else:
            keys.append(_digest("stat", source, info.size, info.mtime_ns))
    return keys


def run_key(settings: dict) -> str:
    return _digest("run", settings)


def work_key(video_key: str, asks: Sequence[object]) -> str:
    return _digest("work", video_key, [a.to_dict() for a in asks])


def row_key(video_key: str, clip_index: int, prompt_index: int, prompt: str, run: str) -> str:
    return _digest("row", video_key, clip_index, prompt_index, prompt, run)
