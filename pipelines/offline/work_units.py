"""From the plan to work units: video keys, the resume filter, units of videos.

1. ``KeyStep`` (over plan chunks; on the driver or in Ray tasks, see ``keying``): each
   video's key (one batched ``get_file_info`` per filesystem and chunk, next to the
   files), whether an earlier run committed it (a vectorized lookup in the committed
   ``KeySet``, shared through the object store with tasks), and whether the file is
   certainly missing. The driver then knows how much is left before any model actor
   starts, holding no per-input list.
2. ``todo_rows`` + a repartition: the videos left to do, cut into work units (blocks) of
   ``unit_videos`` videos (sized from the count and the bytes of what is left): one decode
   task each. A missing file needs no decode: ``missing_rows`` turns it into its
   ``not_found`` rows directly.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.keys import KeyMode, KeySet, as_fixed, raw_keys, work_key
from pipelines.core.records import ClipRef, VideoTask, error_row, expand_asks

KEYED_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("source", pa.string()),
        ("asks", pa.string()),
        ("order", pa.int64()),
        ("input_key", pa.string()),  # the file's identity alone (see pipelines.core.keys)
        ("video_key", pa.string()),  # the work key: input key + asks
        ("size", pa.int64()),
        ("missing", pa.bool_()),
        ("done", pa.bool_()),
        ("subtitles", pa.string()),  # manifest: the video's subtitle file, '' when none
        ("context", pa.string()),  # manifest: the video's free-text context, '' when none
    ]
)

_committed_cache: dict[str, KeySet] = {}


def _committed(ref: ray.ObjectRef | KeySet | None) -> KeySet:
    """The committed key set: given (keyed on the driver), or fetched once per worker
    process (zero-copy from the store)."""
    if isinstance(ref, KeySet):
        return ref
    if ref is None:
        return KeySet(np.empty(0, dtype="S32"))
    key = ref.hex()
    if key not in _committed_cache:
        _committed_cache.clear()
        _committed_cache[key] = ray.get(ref)
    return _committed_cache[key]


class KeyStep:
    def __init__(self, mode: KeyMode, committed: ray.ObjectRef | KeySet | None) -> None:
        self.mode, self.committed = mode, committed

    def __call__(self, batch: pa.Table) -> pa.Table:
        sources = batch.column("source").to_pylist()
        asks = batch.column("asks").to_pylist()
        subtitles = batch.column("subtitles").to_pylist()
        context = batch.column("context").to_pylist()
        raw = raw_keys(sources, self.mode)
        keys = [
            work_key(k, json.loads(a), s or "", c or "")
            for (k, _, _), a, s, c in zip(raw, asks, subtitles, context, strict=True)
        ]
        keys_arr = pa.array(keys, pa.string())
        done = _committed(self.committed).contains(as_fixed(keys_arr))
        return pa.table(
            [
                batch.column("video_id"),
                batch.column("source"),
                batch.column("asks"),
                batch.column("order"),
                pa.array([k for k, _, _ in raw], pa.string()),
                keys_arr,
                pa.array([s for _, _, s in raw], pa.int64()),
                pa.array([m for _, m, _ in raw], pa.bool_()),
                pa.array(done, pa.bool_()),
                batch.column("subtitles"),
                batch.column("context"),
            ],
            schema=KEYED_SCHEMA,
        )


def patch_keys(batch: pa.Table, patch: dict[int, tuple[str, bool]]) -> pa.Table:
    """Replace the keys (and done flags) of the rows whose ``order`` is in ``patch``."""
    if not patch:
        return batch
    orders = batch.column("order").to_pylist()
    keys = batch.column("video_key").to_pylist()
    done = batch.column("done").to_pylist()
    for i, order in enumerate(orders):
        if order in patch:
            keys[i], done[i] = patch[order]
    batch = batch.set_column(5, "video_key", pa.array(keys, pa.string()))
    return batch.set_column(8, "done", pa.array(done, pa.bool_()))


def todo_rows(batch: pa.Table, patch: dict | None = None) -> pa.Table:
    """The videos left to decode: neither committed before nor certainly missing."""
    batch = patch_keys(batch, patch or {})
    keep = pc.and_(pc.invert(batch.column("done")), pc.invert(batch.column("missing")))
    return batch.filter(keep).select(TASK_COLUMNS)


# The columns of a video task row (``VideoTask.to_row`` minus the transcript, which only
# the speech-recognition pass adds).
TASK_COLUMNS = ["video_id", "source", "asks", "video_key", "subtitles", "context"]


def unit_videos(todo: int, todo_bytes: int, cpus: float, max_videos: int, max_bytes: int) -> int:
    """Videos per work unit: at most ``max_videos``, fewer when the average video of what is
    left is large (a unit of about ``max_bytes``), and fewer when the corpus is small, so
    that every CPU still gets work (about eight units per CPU, to balance uneven videos;
    a unit travels the pipeline as one block, so a small corpus also gets its first rows
    committed sooner and loses less to a crash)."""
    by_bytes = max_bytes * todo // todo_bytes if todo_bytes else max_videos
    by_cpus = -(-todo // max(1, int(cpus * 8)))
    return max(1, min(max_videos, by_bytes, by_cpus))


def missing_rows(batch: pa.Table, patch: dict | None = None) -> dict[str, np.ndarray]:
    """``not_found`` rows, one per ask, for the files the key step found missing."""
    from pipelines.offline.ray_data import rows_to_batch

    batch = patch_keys(batch, patch or {})
    missing = batch.filter(pc.and_(batch.column("missing"), pc.invert(batch.column("done"))))
    rows: list[dict[str, Any]] = []
    for r in missing.to_pylist():
        task = VideoTask.from_row(r)
        ref = replace(ClipRef.for_video_error(task, attempt=1), video_rows=len(task.asks))
        error = StageError(ErrorCode.NOT_FOUND, f"{task.source}: no such file", "decode")
        rows.append(error_row(ref, error))
    rows = expand_asks(rows)
    if not rows:  # a block with no row still needs the columns of the others
        return {}
    return rows_to_batch(rows)


def duplicate_inputs(orders: np.ndarray, input_keys: np.ndarray) -> np.ndarray:
    """Positions of inputs whose key an earlier input (in plan order) already has."""
    by_order = np.argsort(orders, kind="stable")
    keys = input_keys[by_order]
    _, first = np.unique(keys, return_index=True)
    dup = np.ones(len(keys), dtype=bool)
    dup[first] = False
    return by_order[dup]
