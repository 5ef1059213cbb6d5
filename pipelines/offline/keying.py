"""Keying the plan: every input's video key, whether an earlier run committed it, whether
its file is certainly missing; and how much is left to do.

The key step (``work_units.KeyStep``: one batched ``get_file_info`` per filesystem and
chunk, a vectorized lookup in the committed ``KeySet``) runs in one of two places:

- **On the driver**, for a job on one machine (no ``--address``, no multi-node Ray) in
  ``stat`` mode with at most ``DRIVER_KEY_MAX_ROWS`` inputs: the files are where the
  driver is, a key costs ~20 us there (measured: 20,000 inputs in 0.38 s), and a job
  with nothing left to decode (a finished job rerun, a list of missing files) then never
  starts Ray at all. Through Ray the same 20,000 keys cost ~4.5 s of task and executor
  start-up, on top of ~4.4 s to start the local Ray.
- **In Ray tasks** otherwise: on a cluster the files may only be reachable from the
  workers, ``content`` keys read whole files, and past ``DRIVER_KEY_MAX_ROWS`` the
  cluster's cores key faster than one driver thread.

Either way the keyed inputs never become a per-input Python list: the driver keeps Arrow
chunks (small columns) or a materialized dataset in the object store.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from pipelines.core.config import JobConfig
from pipelines.core.keys import KeySet, as_fixed, duplicate_key, work_key
from pipelines.offline.ray_data import KEY_BATCH_ROWS
from pipelines.offline.work_units import KeyStep, duplicate_inputs, missing_rows

DRIVER_KEY_MAX_ROWS = 100_000
"""Most inputs keyed on the driver (~2 s of one thread at the measured ~20 us a key)."""


@dataclass
class KeyedInputs:
    """The keyed plan and what is left of it: ``todo`` videos to decode (``todo_bytes``
    of files), ``missing`` files that only need their ``not_found`` rows."""

    chunks: list[pa.Table] | None = None  # keyed on the driver
    dataset: ray.data.Dataset | None = None  # keyed in Ray tasks, materialized
    patch: dict[int, tuple[str, bool]] = field(default_factory=dict)
    todo: int = 0
    todo_bytes: int = 0
    missing: int = 0

    @property
    def needs_ray(self) -> bool:
        """Whether writing the rows needs Ray: a decode, or keys already in Ray."""
        return bool(self.todo) or (self.dataset is not None and bool(self.missing))

    def as_dataset(self) -> ray.data.Dataset:
        """The keyed plan as a Ray dataset (Ray must be running): one block per chunk."""
        if self.dataset is None:
            self.dataset = ray.data.from_arrow(self.chunks)
            self.chunks = None
        return self.dataset

    def missing_batches(self) -> Iterator[dict[str, np.ndarray]]:
        """The ``not_found`` rows of driver-keyed inputs, a batch per chunk, without Ray."""
        for chunk in self.chunks or ():
            batch = missing_rows(chunk, self.patch)
            if batch:
                yield batch


def keys_on_driver(config: JobConfig, inputs: int) -> bool:
    """Whether the driver keys the plan itself (see the module docstring)."""
    if config.video_key != "stat" or inputs > DRIVER_KEY_MAX_ROWS or config.address:
        return False
    if not ray.is_initialized():
        return True  # the job starts a local Ray, on this machine, if it needs one
    alive = [n for n in ray.nodes() if n["Alive"]]
    return len(alive) <= 1


def key_on_driver(config: JobConfig, plan: pa.Table, committed: KeySet) -> KeyedInputs:
    step = KeyStep(config.video_key, committed)
    chunks = [step(chunk) for chunk in _chunks(plan)]
    keyed = KeyedInputs(chunks=chunks)
    for chunk in chunks:
        _count(keyed, chunk)
    return keyed


def key_in_tasks(config: JobConfig, plan: pa.Table, committed: KeySet) -> KeyedInputs:
    """Key every input in Ray tasks; only small columns stream back to the driver."""
    committed_ref = ray.put(committed) if len(committed) else None
    dataset = (
        ray.data.from_arrow(_chunks(plan))
        .map_batches(
            KeyStep(config.video_key, committed_ref),
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=config.decode_cpus,
        )
        .materialize()
    )
    patch = _duplicate_patch(dataset, committed) if config.video_key == "content" else {}
    keyed = KeyedInputs(dataset=dataset, patch=patch)
    counts = dataset.select_columns(["order", "size", "missing", "done"])
    for batch in counts.iter_batches(batch_size=None, batch_format="pyarrow"):
        _count(keyed, batch)
    return keyed


def _chunks(plan: pa.Table) -> list[pa.Table]:
    return [plan.slice(i, KEY_BATCH_ROWS) for i in range(0, plan.num_rows, KEY_BATCH_ROWS)]


def _count(keyed: KeyedInputs, batch: pa.Table) -> None:
    done = batch.column("done").to_numpy(zero_copy_only=False).copy()
    if keyed.patch:
        orders = batch.column("order").to_numpy()
        for i in np.flatnonzero(np.isin(orders, list(keyed.patch))):
            done[i] = keyed.patch[int(orders[i])][1]
    lost = batch.column("missing").to_numpy(zero_copy_only=False)
    left = ~done & ~lost
    keyed.todo += int(left.sum())
    keyed.todo_bytes += int(batch.column("size").to_numpy()[left].sum())
    keyed.missing += int((~done & lost).sum())


def _duplicate_patch(keyed: ray.data.Dataset, committed: KeySet) -> dict[int, tuple[str, bool]]:
    """``content`` keys: a second input with the same bytes keeps its own key (see keys.py).

    Needs every input's key at once (32 bytes + 8 an input, numpy), only in this mode."""
    small = keyed.select_columns(["order", "input_key"])
    parts = list(small.iter_batches(batch_size=None, batch_format="pyarrow"))
    orders = np.concatenate([p.column("order").to_numpy() for p in parts])
    keys = np.concatenate([as_fixed(p.column("input_key")) for p in parts])
    dups = set(orders[duplicate_inputs(orders, keys)].tolist())
    if not dups:
        return {}
    patch: dict[int, tuple[str, bool]] = {}
    wanted = pa.array(sorted(dups), pa.int64())
    for part in keyed.iter_batches(batch_size=None, batch_format="pyarrow"):
        for r in part.filter(pc.is_in(part.column("order"), value_set=wanted)).to_pylist():
            raw = duplicate_key(r["input_key"], r["source"])
            key = work_key(raw, json.loads(r["asks"]), r["subtitles"] or "", r["context"] or "")
            done = bool(committed.contains(as_fixed(pa.array([key])))[0])
            patch[r["order"]] = (key, done)
    return patch
