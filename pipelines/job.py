"""The offline corpus job: inputs -> decode tasks -> encoder actors -> LM actors -> Parquet."""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import uuid

import ray

from pipelines.config import DecodeConfig, JobConfig, PoolConfig
from pipelines.faults import AttemptLog
from pipelines.inputs import default_asks, expand_inputs, filesystem_for, tasks_to_arrow
from pipelines.keys import video_keys, work_key
from pipelines.models import resolve_family
from pipelines.models.base import SamplingHints
from pipelines.models.text_lm import load_summary_lm
from pipelines.output import (
    ShardWriter,
    Summary,
    batch_rows,
    committed_video_keys,
    write_summary,
)
from pipelines.ray_data import Heartbeat, apply_fan_out, apply_map
from pipelines.records import VideoTask
from pipelines.resume import Journal, clear_scratch, journaled_keys, prepare_output
from pipelines.stages.decode import DecodeStage
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GenerateStage
from pipelines.stall import HeartbeatTracker, StallWatchdog
from pipelines.submit import check_workers_reach_out
from pipelines.summaries import run_summaries

log = logging.getLogger(__name__)


def check_sampling(decode: DecodeConfig, hints: SamplingHints, model_type: str) -> None:
    """Refuse frame settings the model cannot take, instead of silently changing them."""
    if decode.frame_factor % hints.frame_factor:
        raise ValueError(
            f"{model_type} needs frame counts in multiples of {hints.frame_factor}; "
            f"set frame_factor to a multiple of it (got {decode.frame_factor})"
        )
    if decode.min_frames < hints.min_frames:
        raise ValueError(
            f"{model_type} needs at least {hints.min_frames} frames per clip; "
            f"raise min_frames (got {decode.min_frames})"
        )


def init_ray(config: JobConfig) -> None:
    if ray.is_initialized():
        return
    if config.address:
        ray.init(address=config.address)
        return
    # A local Ray must fit one decode task plus the minimum of both actor pools, or the
    # pipeline would wait forever for CPUs; logical CPUs may exceed physical cores here
    # because the stages take turns on them.
    needed = config.decode_cpus + sum(
        p.min_actors * p.num_cpus for p in (config.encoder, config.lm)
    )
    ray.init(
        # "local" never attaches to a cluster found through RAY_ADDRESS: joining one is
        # what --address is for.
        address="local",
        num_cpus=max(os.cpu_count() or 1, math.ceil(needed)),
        include_dashboard=False,
        configure_logging=False,
    )


def _gpus(pool: PoolConfig) -> PoolConfig:
    if pool.num_gpus is not None:
        return pool
    has_gpu = ray.cluster_resources().get("GPU", 0) > 0
    return pool.model_copy(update={"num_gpus": 1.0 if has_gpu else 0.0})


def plan_job(config: JobConfig) -> list[VideoTask]:
    """Everything that can fail because of what the user asked, before Ray starts."""
    family, model_type = resolve_family(config.model.model, config.model.revision)
    check_sampling(config.decode, family.hints, model_type)
    if config.summarize is not None:
        load_summary_lm(config.summarize.model or config.model)  # refuses non-chat models
    return expand_inputs(config.inputs, default_asks(config.prompts, config.questions))


def run_job(config: JobConfig, tasks: list[VideoTask] | None = None) -> Summary:
    tasks = plan_job(config) if tasks is None else tasks
    fs, out = filesystem_for(config.out)
    run = prepare_output(fs, out, config)
    keys = video_keys([t.source for t in tasks], config.video_key)
    tasks = [
        dataclasses.replace(t, video_key=work_key(k, t.asks))
        for t, k in zip(tasks, keys, strict=True)
    ]
    done = committed_video_keys(fs, out)
    todo = [t for t in tasks if t.video_key not in done]
    journaled = journaled_keys(fs, out)
    session = uuid.uuid4().hex[:12]
    writer = ShardWriter(
        out,
        fs,
        model_id=config.model.model,
        session=session,
        rows_per_shard=config.rows_per_shard,
        commit_interval_s=config.commit_interval_s,
    )
    rework = 0
    attempts = AttemptLog(fs, out, session)
    if todo:
        init_ray(config)
        check_workers_reach_out(config.out)
        tracker = HeartbeatTracker.remote()
        heartbeat = Heartbeat(tracker)
        ds = _pipeline(config, todo, attempts, heartbeat, Journal(config.out, out, session, run))
        revision = config.model.revision or ""
        stages = ("decode", "encode", "generate")
        with StallWatchdog(config.stall_timeout_s, tracker, stages) as watchdog:
            # No prefetch: rows waiting at the driver are rework if it dies; writing is cheap.
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                watchdog.progress()
                rows = batch_rows(batch, config.model.model, revision, run)
                rework += sum(r["row_key"] in journaled for r in rows)
                writer.add(rows)
        if writer.incomplete_videos:
            raise RuntimeError(
                f"{writer.incomplete_videos} videos are missing rows at the end of the job; "
                "their rows were not committed, a rerun will redo them"
            )
    summary = writer.close(
        inputs=len(tasks),
        skipped_done=len(tasks) - len(todo),
        retries=attempts.retries(),
        rework=rework,
    )
    clear_scratch(fs, out)
    if config.summarize is not None:
        init_ray(config)
        for name, value in run_summaries(config, _gpus(config.lm)).items():
            setattr(summary, name, value)
        write_summary(fs, out, summary)
    return summary


def _pipeline(config: JobConfig, todo, attempts, heartbeat, journal) -> ray.data.Dataset:
    encoder_pool, lm_pool = _gpus(config.encoder), _gpus(config.lm)
    decode = DecodeStage(
        config.decode,
        num_cpus=config.decode_cpus,
        attempts=attempts,
        max_attempts=config.max_attempts,
    )
    encode = EncodeStage(config.model, encoder_pool)
    generate = GenerateStage(config.model, lm_pool, config.generation)

    ds = ray.data.from_arrow(tasks_to_arrow(todo))
    # One block per video lets decode tasks spread over the cluster from the start, and
    # keeps a poison input's retries to its own task.
    ds = ds.repartition(len(todo))
    ds = apply_fan_out(ds, decode, max_retries=config.max_attempts, heartbeat=heartbeat)
    ds = apply_map(
        ds,
        encode,
        min_actors=encoder_pool.min_actors,
        max_actors=encoder_pool.max_actors,
        heartbeat=heartbeat,
    )
    return apply_map(
        ds,
        generate,
        min_actors=lm_pool.min_actors,
        max_actors=lm_pool.max_actors,
        heartbeat=heartbeat,
        on_rows=journal,
    )
