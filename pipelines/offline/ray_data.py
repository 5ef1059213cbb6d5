"""Ray Data adapter: turns stages into ``map_batches`` steps. No model logic lives here.

Rows carry their error in ``error_code``/``error_message``/``error_stage``; a row that
already failed passes every later stage untouched, so every input reaches the writer.

The Ray Data settings the job relies on, in one place (figures: bench/README.md, "scale"):

- ``KEY_BATCH_ROWS``: plan rows per key step. Large: a key is one stat (batched per
  filesystem), so the cost per task dominates below a few thousand rows. A small local
  job keys on the driver instead and starts Ray only when something is left to decode
  (``keying.DRIVER_KEY_MAX_ROWS``).
- ``UNIT_MAX_VIDEOS`` / ``UNIT_MAX_BYTES``: a decode task takes a *unit* of videos (a
  block made by ``repartition(target_num_rows_per_block=...)``, decoded with the same
  ``batch_size``), so a million-video corpus is tens of thousands of tasks and blocks, not
  millions. Smaller units when the average video is large or the corpus is small, so that
  every CPU still gets work (``work_units.unit_videos``). A unit retried after a worker
  death is redone whole, with the video that was in progress charged
  (``pipelines.core.faults``): units bound that rework.
- ``MAX_BLOCK_BYTES`` (``DataContext.target_max_block_size``): a map task's outputs are
  buffered into blocks up to this size before they move on. Ray's default (128 MiB)
  would hold a unit's decoded clips until the unit ends; 16 MiB lets clips of real
  frames stream to the encoder while small rows (error rows, tiny clips) still share a
  block instead of paying per-block overhead each.
- ``YIELD_BYTES`` / ``YIELD_ROWS``: a decode task hands its clips (or audio windows) to
  Ray Data in batches of up to 4 MiB of arrays or 64 rows: a clip of real frames (a few
  MiB) still leaves alone, while tiny clips stop paying a block conversion each (2,000
  one-clip videos: bench/README.md "scale").
- Model stages: ``batch_size`` rows per call, an ``ActorPoolStrategy`` of the pool's size;
  the resources of decode are given as a function so that Ray Data never fuses decode
  into the model actors (see ``apply_fan_out``).
- Object-store budget (``DataContext.execution_options.resource_limits``): Ray Data's
  default is half the object store, so on a real node every decoded clip of a corpus fits
  and decode races ahead of the slow LM: the peak grew with the corpus (9.4x for 10x the
  clips, bench/README.md "hand-off"). The job sets the budget from what its pools hold at
  once (``placement.object_store_budget``: a few batches of every pool, at the largest
  clip the decode settings allow), so Ray Data's backpressure pauses decode and encode
  while clips wait for the LM. It bounds, never blocks: Ray Data always lets each stage
  run one task.
- The driver iterates with ``prefetch_batches=0``: rows waiting at the driver are rework
  if it dies, and writing is cheap.
- Heartbeats to the run monitor: at most one per ``HEARTBEAT_EVERY_S`` per worker and stage.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np
import ray.data

from pipelines.core.errors import StageError
from pipelines.core.faults import maybe_hang
from pipelines.core.records import (
    VideoTask,
    error_fields,
    row_error,
)
from pipelines.core.stage import FanOutStage, MapStage

KEY_BATCH_ROWS = 4096
UNIT_MAX_VIDEOS = 32
UNIT_MAX_BYTES = 4 * 1024**3
MAX_BLOCK_BYTES = 16 * 1024**2
YIELD_BYTES = 4 * 1024**2
YIELD_ROWS = 64
HEARTBEAT_EVERY_S = 1.0


@contextlib.contextmanager
def job_data_context(object_store_bytes: float | None = None) -> Iterator[None]:
    """The job's Ray Data settings while its datasets run (see the module docstring)."""
    ctx = ray.data.DataContext.get_current()
    before = ctx.target_max_block_size
    limits = ctx.execution_options.resource_limits
    ctx.target_max_block_size = MAX_BLOCK_BYTES
    if object_store_bytes is not None:
        ctx.execution_options.resource_limits = limits.copy(object_store_memory=object_store_bytes)
    try:
        yield
    finally:
        ctx.target_max_block_size = before
        ctx.execution_options.resource_limits = limits


def batch_to_rows(batch: Mapping[str, np.ndarray]) -> list[dict[str, Any]]:
    n = len(next(iter(batch.values()))) if batch else 0
    return [{k: v[i] for k, v in batch.items()} for i in range(n)]


def rows_to_batch(rows: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    batch: dict[str, np.ndarray] = {}
    for key in rows[0]:
        values = [r[key] for r in rows]
        if isinstance(values[0], (np.ndarray, bytes)):
            # Ragged arrays and byte strings go in object arrays; Ray maps them to
            # variable-shaped tensor and binary columns.
            column = np.empty(len(values), dtype=object)
            column[:] = values
            batch[key] = column
        else:
            batch[key] = np.asarray(values)
    return batch


def map_rows(stage: MapStage, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Apply a stage to rows through its codec: failed rows pass through, results update
    their row (after the codec's fan-out, e.g. one row per ask for the LM stage)."""
    codec = stage.codec
    if codec.expand is not None:
        rows = codec.expand(rows)
    takes = codec.takes
    todo = [i for i, r in enumerate(rows) if row_error(r) is None and (takes is None or takes(r))]
    results = stage([codec.item(rows[i]) for i in todo]) if todo else []
    out = [{**r, **codec.defaults} for r in rows]
    for i, res in zip(todo, results, strict=True):
        out[i].update(error_fields(res) if isinstance(res, StageError) else codec.update(res))
    if codec.consumed:
        for r in out:
            r.pop(codec.consumed, None)
    return out


def fan_out_rows(stage: FanOutStage, task: VideoTask) -> Iterator[dict[str, Any]]:
    for res in stage.iter_outputs(task):
        yield stage.codec.update(res)


class _FanOutFn:
    """Decode runs as plain tasks: no state worth an actor."""

    def __init__(self, stage: FanOutStage, heartbeat: Heartbeat | None = None) -> None:
        self.stage, self.heartbeat = stage, heartbeat

    def __call__(self, batch: dict[str, np.ndarray]) -> Iterator[dict[str, np.ndarray]]:
        # One work unit per call. Clips leave in batches of up to YIELD_BYTES (or
        # YIELD_ROWS): a long video streams instead of materialising all its frames, and
        # small clips do not pay a block conversion each (~1.8 ms a batch, measured).
        # Sizes, not time, decide: a retried unit yields the same batches.
        tasks = [VideoTask.from_row(row) for row in batch_to_rows(batch)]
        self.stage.begin_unit(tasks)
        pending: list[dict[str, Any]] = []
        size = 0
        for task in tasks:
            for out in fan_out_rows(self.stage, task):
                if self.heartbeat is not None:
                    self.heartbeat(self.stage.name)
                pending.append(out)
                size += sum(v.nbytes for v in out.values() if isinstance(v, np.ndarray))
                if size >= YIELD_BYTES or len(pending) >= YIELD_ROWS:
                    yield rows_to_batch(pending)
                    pending, size = [], 0
        if pending:
            yield rows_to_batch(pending)
        self.stage.end_unit()


class _MapActor:
    """One actor of a model stage's pool: loads the model once, then maps batches."""

    def __init__(
        self,
        stage: MapStage,
        heartbeat: Heartbeat | None = None,
        on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> None:
        self.stage, self.heartbeat, self.on_rows = stage, heartbeat, on_rows
        stage.setup()
        if heartbeat is not None:  # loaded: from now on its silence counts
            heartbeat(f"{stage.name}:ready")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        maybe_hang(self.stage.name)
        rows = map_rows(self.stage, batch_to_rows(batch))
        if self.on_rows is not None:
            self.on_rows(rows)
        if self.heartbeat is not None:
            self.heartbeat(self.stage.name)
        return rows_to_batch(rows)


class Heartbeat:
    """Tells the driver's stall watchdog that a stage finished a batch (fire and forget,
    at most one call per ``HEARTBEAT_EVERY_S`` per worker and stage)."""

    def __init__(self, tracker: ray.actor.ActorHandle) -> None:
        self.tracker = tracker
        self._last: dict[str, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"tracker": self.tracker, "_last": {}}

    def __call__(self, stage: str) -> None:
        now = time.monotonic()
        if now - self._last.get(stage, -HEARTBEAT_EVERY_S) >= HEARTBEAT_EVERY_S:
            self._last[stage] = now
            self.tracker.beat.remote(stage)


def apply_fan_out(
    ds: ray.data.Dataset,
    stage: FanOutStage,
    *,
    unit_size: int = 1,
    max_retries: int = 3,
    heartbeat: Heartbeat | None = None,
) -> ray.data.Dataset:
    # Retries after a worker death let the attempt log quarantine a poison input on its
    # last try instead of failing the job.
    args = {**stage.resources.ray_args(), "max_retries": max_retries}
    return ds.repartition(target_num_rows_per_block=unit_size).map_batches(
        _FanOutFn(stage, heartbeat),
        batch_size=unit_size,  # one block = one work unit = one task
        batch_format="numpy",
        # Passing the resources as a function stops Ray Data from fusing decode into the
        # encoder actors: decode must stay a pool of CPU tasks that spreads over CPU nodes
        # and overlaps with inference, not run inside (and stall) the GPU actors.
        ray_remote_args_fn=lambda: args,
    )


def apply_map(
    ds: ray.data.Dataset,
    stage: MapStage,
    *,
    min_actors: int,
    max_actors: int,
    heartbeat: Heartbeat | None = None,
    on_rows: Callable[[list[dict[str, Any]]], None] | None = None,
) -> ray.data.Dataset:
    # A class per stage, so Ray's dashboard, logs and process titles say which stage an
    # actor runs ("MapWorker(MapBatches(GenerateActor))").
    actor_cls = type(f"{stage.name.title()}Actor", (_MapActor,), {})
    return ds.map_batches(
        actor_cls,
        fn_constructor_args=(stage, heartbeat, on_rows),
        batch_size=stage.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(min_size=min_actors, max_size=max_actors),
        **stage.resources.ray_args(),
    )
