"""The offline corpus job: inputs -> decode tasks -> encoder actors -> LM actors -> Parquet.

The recipe, top to bottom: plan the inputs (driver, Arrow, streamed); key them and drop
what an earlier run committed (on the driver for a small local job, else in Ray tasks:
``keying``); stop there when nothing is left, without starting Ray when nothing needed
it; else cut the rest into work units, decode, encode, generate, and commit complete
videos as they arrive. The driver holds counters and the open videos, never a per-input
list.
"""

from __future__ import annotations

import logging
import math
import os
import uuid

import numpy as np
import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from pipelines.core.config import JobConfig
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
from pipelines.offline.cluster_check import check_workers_reach_out
from pipelines.offline.inputs import default_asks, plan_inputs, tasks_to_arrow
from pipelines.offline.keying import KeyedInputs, key_in_tasks, key_on_driver, keys_on_driver
from pipelines.offline.ledger.attempts import AttemptLog
from pipelines.offline.ledger.lease import Lease
from pipelines.offline.ledger.resume import Journal, clear_scratch, journaled_keys, prepare_output
from pipelines.offline.ledger.stall import RunMonitor, StallWatchdog
from pipelines.offline.placement import caption_pools, object_store_budget, place
from pipelines.offline.ray_data import (
    UNIT_MAX_BYTES,
    UNIT_MAX_VIDEOS,
    Heartbeat,
    apply_fan_out,
    apply_map,
    job_data_context,
)
from pipelines.offline.work_units import missing_rows, todo_rows, unit_videos

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
        from pipelines.models.text_lm import load_summary_lm

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
        with job_data_context(object_store_budget(config)):
            inputs = plan.num_rows
            if keys_on_driver(config, inputs):
                keyed = key_on_driver(config, plan, committed)
                if keyed.needs_ray or config.summarize is not None:
                    _start_ray(config)
            else:
                _start_ray(config)
                keyed = key_in_tasks(config, plan, committed)
            del plan  # the keyed chunks or dataset hold what is still needed
            return _run(config, inputs, keyed, fs, out, session, run, journaled)


def _start_ray(config: JobConfig) -> None:
    """Ray, once a step needs it (a rerun with nothing left never starts it), and a check
    that every node of it can write where the driver reads (also when it was running)."""
    init_ray(config)
    check_workers_reach_out(config.out)


def _run(config: JobConfig, inputs: int, keyed: KeyedInputs, fs, out, session, run, journaled):
    todo, missing = keyed.todo, keyed.missing
    writer = ShardWriter(
        out,
        fs,
        model_id=config.model.model,
        session=session,
        rows_per_shard=config.rows_per_shard,
        commit_interval_s=config.commit_interval_s,
    )
    revision = config.model.revision or ""
    rework = 0
    retries = 0
    transcripts: dict = {}

    def write(batch) -> None:
        nonlocal rework
        rows = batch_rows(batch, config.model.model, revision, run)
        rework += sum(r["row_key"] in journaled for r in rows)
        writer.add(rows)

    if keyed.needs_ray:
        # On the driver's node: a worker node that leaves must not take the ledger with it.
        here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
        monitor = RunMonitor.options(scheduling_strategy=here).remote()
        heartbeat = Heartbeat(monitor)
        journal = Journal(config.out, out, session, run, flush_every_s=config.commit_interval_s)
        unit = unit_videos(
            todo,
            keyed.todo_bytes,
            ray.cluster_resources().get("CPU", 1),
            UNIT_MAX_VIDEOS,
            UNIT_MAX_BYTES,
        )
        dataset, patch = keyed.as_dataset(), keyed.patch
        left = dataset.map_batches(
            todo_rows, fn_kwargs={"patch": patch}, batch_size=None, batch_format="pyarrow"
        )
        if config.asr is not None and todo:
            from pipelines.offline.asr_pass import transcribe_pass

            left, transcripts = transcribe_pass(config, left, unit, fs, out, session, monitor)
        if todo:
            attempts = AttemptLog(monitor)
            ds = _pipeline(config, dataset, left, patch, unit, attempts, heartbeat, journal)
        else:  # only missing files: no model actor needs to start, nothing to place
            ds = _missing(dataset, patch)
        stages = ("decode", "encode", "generate")
        with StallWatchdog(config.stall_timeout_s, monitor, stages) as watchdog:
            # No prefetch: rows waiting at the driver are rework if it dies; writing is cheap.
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                if not len(batch.get("video_id", ())):
                    continue
                watchdog.progress()
                write(batch)
        retries = ray.get(monitor.retry_count.remote())
    else:  # keyed on the driver, nothing to decode: the missing files' rows, without Ray
        for batch in keyed.missing_batches():
            write(batch)
    if writer.incomplete_videos:
        raise RuntimeError(
            f"{writer.incomplete_videos} videos are missing rows at the end of the job; "
            "their rows were not committed, a rerun will redo them"
        )
    summary = writer.close(
        inputs=inputs,
        skipped_done=inputs - todo - missing,
        retries=retries,
        rework=rework,
        transcripts=transcripts,
    )
    clear_scratch(fs, out)
    if config.summarize is not None:
        from pipelines.offline.summaries import run_summaries

        summary_lm = place({"lm": config.lm}, config.decode_cpus)["lm"]  # alone: whole GPUs
        for name, value in run_summaries(config, summary_lm).items():
            setattr(summary, name, value)
        write_summary(fs, out, summary)
    return summary


def _pipeline(config: JobConfig, keyed, left, patch, unit, attempts, heartbeat, journal):
    # Fails fast (exit 2) when the cluster cannot hold the pools and a decode task. Only the
    # caption pools: the speech-recognition pool ran, alone, before them.
    # The stages, Whisper and the summary LM are imported where used: a rerun with nothing
    # left, or a job without speech recognition, never pays their imports on the driver.
    from pipelines.stages.decode import DecodeStage
    from pipelines.stages.encode import EncodeStage
    from pipelines.stages.generate import GenerateStage

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
