"""The offline corpus job: inputs -> decode tasks -> encoder actors -> LM actors -> Parquet.

The recipe, top to bottom: plan the inputs (driver, Arrow, streamed); key them and drop
what an earlier run committed (Ray tasks, materialized small columns); stop there when
nothing is left; else cut the rest into work units, decode, encode, generate, and commit
complete videos as they arrive. The driver holds counters and the open videos, never a
per-input list.
"""

from __future__ import annotations

import json
import logging
import math
import os
import uuid

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipelines.core.config import JobConfig
from pipelines.core.keys import as_fixed, duplicate_key, work_key
from pipelines.core.output import (
    ShardWriter,
    Summary,
    batch_rows,
    committed_keyset,
    write_summary,
)
from pipelines.core.paths import filesystem_for
from pipelines.core.records import VideoTask
from pipelines.models import resolve_family
from pipelines.models.hints import check_sampling
from pipelines.models.text_lm import load_summary_lm
from pipelines.offline.asr_pass import transcribe_pass
from pipelines.offline.cluster_check import check_workers_reach_out
from pipelines.offline.inputs import default_asks, plan_inputs, tasks_to_arrow
from pipelines.offline.ledger.attempts import AttemptLog
from pipelines.offline.ledger.lease import Lease
from pipelines.offline.ledger.resume import Journal, clear_scratch, journaled_keys, prepare_output
from pipelines.offline.ledger.stall import RunMonitor, StallWatchdog
from pipelines.offline.placement import caption_pools, object_store_budget, place
from pipelines.offline.ray_data import (
    KEY_BATCH_ROWS,
    UNIT_MAX_BYTES,
    UNIT_MAX_VIDEOS,
    Heartbeat,
    apply_fan_out,
    apply_map,
    job_data_context,
)
from pipelines.offline.summaries import run_summaries
from pipelines.offline.work_units import (
    KeyStep,
    duplicate_inputs,
    missing_rows,
    todo_rows,
    unit_videos,
)
from pipelines.stages.decode import DecodeStage
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GenerateStage

log = logging.getLogger(__name__)


def init_ray(config: JobConfig) -> None:
    if ray.is_initialized():
        return
    if config.address:
        ray.init(address=config.address)
        return
    # A local Ray gets the machine's cores for decode tasks on top of what the model
    # actors hold: the actors mostly wait (for a GPU, or for decode) and must not starve
    # decode of its cores. Logical CPUs then exceed physical ones; the stages take turns.
    # The passes run one after the other: the larger of their pools counts, not the sum.
    actors = sum(p.min_actors * p.num_cpus for p in caption_pools(config).values())
    if config.asr is not None:
        actors = max(actors, config.asr.pool.min_actors * config.asr.pool.num_cpus)
    ray.init(
        # "local" never attaches to a cluster found through RAY_ADDRESS: joining one is
        # what --address is for.
        address="local",
        num_cpus=math.ceil(max(os.cpu_count() or 1, config.decode_cpus) + actors),
        include_dashboard=False,
        configure_logging=False,
    )


def checked_config(config: JobConfig) -> JobConfig:
    """The config the job runs: the model family's frame rules applied (an unset
    ``frame_factor`` becomes the family's; settings the model cannot take are refused) and a
    summary model that can chat. Everything here fails before Ray starts."""
    family, model_type = resolve_family(config.model.model, config.model.revision)
    decode = check_sampling(config.decode, family.hints, model_type)
    if config.summarize is not None:
        load_summary_lm(config.summarize.model or config.model)  # refuses non-chat models
    return config.model_copy(update={"decode": decode})


def plan_job(config: JobConfig) -> pa.Table:
    """The inputs' plan, after the model checks of ``checked_config``."""
    checked_config(config)
    return plan_inputs(config.inputs, default_asks(config.prompts, config.questions))


def run_job(config: JobConfig, plan: pa.Table | list[VideoTask] | None = None) -> Summary:
    config = checked_config(config)
    if plan is None:
        plan = plan_inputs(config.inputs, default_asks(config.prompts, config.questions))
    if isinstance(plan, list):
        plan = tasks_to_arrow(plan)
    # Plan order, kept through the keyed dataset: first-seen wins among content duplicates.
    plan = plan.append_column("order", pa.array(np.arange(plan.num_rows, dtype=np.int64)))
    fs, out = filesystem_for(config.out)
    out = out.rstrip("/")
    session = uuid.uuid4().hex[:12]
    fs.create_dir(out, recursive=True)
    with Lease(fs, out, session):
        run = prepare_output(fs, out, config)
        committed = committed_keyset(fs, f"{out}/clips")
        journaled = journaled_keys(fs, out)
        init_ray(config)
        check_workers_reach_out(config.out)
        with job_data_context(object_store_budget(config)):
            return _run(config, plan, fs, out, session, run, committed, journaled)


def _run(config: JobConfig, plan: pa.Table, fs, out, session, run, committed, journaled):
    inputs = plan.num_rows
    keyed, patch, todo, todo_bytes, missing = _keyed(config, plan, committed)
    del plan  # in the object store now
    writer = ShardWriter(
        out,
        fs,
        model_id=config.model.model,
        session=session,
        rows_per_shard=config.rows_per_shard,
        commit_interval_s=config.commit_interval_s,
    )
    rework = 0
    retries = 0
    transcripts: dict = {}
    if todo or missing:
        # On the driver's node: a worker node that leaves must not take the ledger with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        monitor = RunMonitor.options(scheduling_strategy=here).remote()
        heartbeat = Heartbeat(monitor)
        journal = Journal(config.out, out, session, run, flush_every_s=config.commit_interval_s)
        unit = unit_videos(
            todo, todo_bytes, ray.cluster_resources().get("CPU", 1), UNIT_MAX_VIDEOS, UNIT_MAX_BYTES
        )
        left = keyed.map_batches(
            todo_rows, fn_kwargs={"patch": patch}, batch_size=None, batch_format="pyarrow"
        )
        if config.asr is not None and todo:
            left, transcripts = transcribe_pass(config, left, unit, fs, out, session, monitor)
        if todo:
            attempts = AttemptLog(monitor)
            ds = _pipeline(config, keyed, left, patch, unit, attempts, heartbeat, journal)
        else:  # only missing files: no model actor needs to start, nothing to place
            ds = _missing(keyed, patch)
        revision = config.model.revision or ""
        stages = ("decode", "encode", "generate")
        with StallWatchdog(config.stall_timeout_s, monitor, stages) as watchdog:
            # No prefetch: rows waiting at the driver are rework if it dies; writing is cheap.
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                if not len(batch.get("video_id", ())):
                    continue
                watchdog.progress()
                rows = batch_rows(batch, config.model.model, revision, run)
                rework += sum(r["row_key"] in journaled for r in rows)
                writer.add(rows)
        if writer.incomplete_videos:
            raise RuntimeError(
                f"{writer.incomplete_videos} videos are missing rows at the end of the job; "
                "their rows were not committed, a rerun will redo them"
            )
        retries = ray.get(monitor.retry_count.remote())
    summary = writer.close(
        inputs=inputs,
        skipped_done=inputs - todo - missing,
        retries=retries,
        rework=rework,
        transcripts=transcripts,
    )
    clear_scratch(fs, out)
    if config.summarize is not None:
        summary_lm = place({"lm": config.lm}, config.decode_cpus)["lm"]  # alone: whole GPUs
        for name, value in run_summaries(config, summary_lm).items():
            setattr(summary, name, value)
        write_summary(fs, out, summary)
    return summary


def _keyed(config: JobConfig, plan: pa.Table, committed) -> tuple:
    """Key every input in Ray tasks and count what is left: (keyed dataset, key patch,
    videos to decode, missing files). Only small columns stream back to the driver."""
    chunks = [plan.slice(i, KEY_BATCH_ROWS) for i in range(0, plan.num_rows, KEY_BATCH_ROWS)]
    committed_ref = ray.put(committed) if len(committed) else None
    keyed = (
        ray.data.from_arrow(chunks)
        .map_batches(
            KeyStep(config.video_key, committed_ref),
            batch_size=None,
            batch_format="pyarrow",
            num_cpus=config.decode_cpus,
        )
        .materialize()
    )
    patch = _duplicate_patch(keyed, committed) if config.video_key == "content" else {}
    todo = missing = 0
    todo_bytes = 0
    counts = keyed.select_columns(["order", "size", "missing", "done"])
    for batch in counts.iter_batches(batch_size=None, batch_format="pyarrow"):
        done = batch.column("done").to_numpy(zero_copy_only=False).copy()
        if patch:
            orders = batch.column("order").to_numpy()
            for i in np.flatnonzero(np.isin(orders, list(patch))):
                done[i] = patch[int(orders[i])][1]
        lost = batch.column("missing").to_numpy(zero_copy_only=False)
        todo += int((~done & ~lost).sum())
        todo_bytes += int(batch.column("size").to_numpy()[~done & ~lost].sum())
        missing += int((~done & lost).sum())
    return keyed, patch, todo, todo_bytes, missing


def _duplicate_patch(keyed: ray.data.Dataset, committed) -> dict[int, tuple[str, bool]]:
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


def _pipeline(config: JobConfig, keyed, left, patch, unit, attempts, heartbeat, journal):
    # Fails fast (exit 2) when the cluster cannot hold the pools and a decode task. Only the
    # caption pools: the speech-recognition pool ran, alone, before them.
    placed = place(caption_pools(config), config.decode_cpus)
    encoder_pool, lm_pool = placed["encoder"], placed["lm"]
    decode = DecodeStage(
        config.decode,
        num_cpus=config.decode_cpus,
        attempts=attempts,
        max_attempts=config.max_attempts,
        context=config.context,
    )
    encode = EncodeStage(config.model, encoder_pool)
    generate = GenerateStage(config.model, lm_pool, config.generation, config.context)

    ds = apply_fan_out(
        left, decode, unit_size=unit, max_retries=config.max_attempts, heartbeat=heartbeat
    )
    ds = apply_map(
        ds,
        encode,
        min_actors=encoder_pool.min_actors,
        max_actors=encoder_pool.max_actors,
        heartbeat=heartbeat,
    )
    ds = apply_map(
        ds,
        generate,
        min_actors=lm_pool.min_actors,
        max_actors=lm_pool.max_actors,
        heartbeat=heartbeat,
        on_rows=journal,
    )
    # Missing files need no decode or model: their not_found rows join at the end.
    return ds.union(_missing(keyed, patch))


def _missing(keyed: ray.data.Dataset, patch: dict) -> ray.data.Dataset:
    return keyed.map_batches(
        missing_rows, fn_kwargs={"patch": patch}, batch_size=None, batch_format="pyarrow"
    )
