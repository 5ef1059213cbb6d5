"""The speech-recognition pass of a job, run before the caption pass (``transcripts.py`` says
why and what it writes): the videos left to caption -> audio decode tasks -> ASR actors ->
committed ``transcripts/`` shards -> the caption pass's input."""

from __future__ import annotations

import logging
import time
from typing import Any

import pyarrow.fs as pafs
import ray

from pipelines.core.config import JobConfig
from pipelines.offline.ledger.attempts import AttemptLog
from pipelines.offline.ledger.stall import StallWatchdog
from pipelines.offline.placement import asr_object_store_budget, place
from pipelines.offline.ray_data import (
    Heartbeat,
    apply_fan_out,
    apply_map,
    batch_to_rows,
)
from pipelines.offline.transcripts import (
    TranscriptWriter,
    caption_tasks,
    committed_transcripts,
    keyset_of,
    pass_summary,
    transcript_keyset,
    without_keys,
)
from pipelines.stages.audio import AudioStage
from pipelines.stages.transcribe import TranscribeStage

log = logging.getLogger(__name__)


def transcribe_pass(
    config: JobConfig,
    left: ray.data.Dataset,
    unit: int,
    fs: pafs.FileSystem,
    out: str,
    session: str,
    monitor: ray.actor.ActorHandle,
) -> tuple[ray.data.Dataset, dict[str, Any]]:
    """Transcribe what no earlier run did; return (the caption pass's task rows, counts)."""
    assert config.asr is not None
    started = time.perf_counter()
    todo_keys = ray.put(keyset_of(left))
    done = transcript_keyset(fs, out)
    fresh = left.map_batches(
        without_keys,
        fn_kwargs={"keys": ray.put(done) if len(done) else None},
        batch_size=None,
        batch_format="pyarrow",
    ).materialize()
    writer = TranscriptWriter(
        fs, out, session, config.asr.model.model, config.rows_per_shard, config.commit_interval_s
    )
    if fresh.count():
        # Alone on the cluster while it runs: the caption pools start after it.
        pool = place({"asr": config.asr.pool}, config.decode_cpus)["asr"]
        heartbeat = Heartbeat(monitor)
        audio = AudioStage(
            config.decode,
            config.asr,
            config.context,
            num_cpus=config.decode_cpus,
            attempts=AttemptLog(monitor),
            max_attempts=config.max_attempts,
        )
        ds = apply_fan_out(
            fresh,
            audio,
            unit_size=unit,
            max_retries=config.max_attempts,
            heartbeat=heartbeat,
        )
        transcribe = TranscribeStage(config.asr.model_copy(update={"pool": pool}))
        ds = apply_map(
            ds,
            transcribe,
            min_actors=pool.min_actors,
            max_actors=pool.max_actors,
            heartbeat=heartbeat,
        )
        # Windows, not clips, wait in the object store here: the pass has its own budget (on
        # the dataset itself: a dataset runs under the context it was made in).
        limits = ds.context.execution_options.resource_limits
        budget = asr_object_store_budget(config)
        ds.context.execution_options.resource_limits = limits.copy(object_store_memory=budget)
        stages = ("audio", "transcribe")
        with StallWatchdog(config.stall_timeout_s, monitor, stages) as watchdog:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=0):
                if not len(batch.get("video_key", ())):
                    continue
                watchdog.progress()
                writer.add(batch_to_rows({k: v for k, v in batch.items() if k != "samples"}))
        writer.commit()
        if writer.incomplete_videos:
            raise RuntimeError(
                f"{writer.incomplete_videos} videos are missing audio windows at the end of "
                "the speech-recognition pass; a rerun will redo them"
            )
    shards = committed_transcripts(fs, out)
    tasks = ray.data.read_parquet(shards, filesystem=fs).map_batches(
        caption_tasks, fn_kwargs={"todo": todo_keys}, batch_size=None, batch_format="pyarrow"
    )
    return tasks, pass_summary(writer, time.perf_counter() - started)
