"""``vidcap caption``: caption a corpus of videos into Parquet (the offline job)."""

from __future__ import annotations

import argparse
import sys

from pipelines.cli.job_flags import add_job_args, job_config_from_args
from pipelines.core.config import JobConfig
from pipelines.core.output import Summary
from pipelines.core.usage import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "caption",
        help="caption a corpus of videos into Parquet",
        usage="vidcap caption [INPUT ...] --out OUT [--config FILE] [options]",
        description="Caption a corpus of videos into Parquet. Every JobConfig field has a flag; "
        "--config FILE gives them as YAML or JSON, and flags override the file.",
    )
    add_job_args(p)
    p.set_defaults(func=cmd_caption)


def cmd_caption(args: argparse.Namespace) -> int:
    try:
        config = job_config_from_args(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return run_caption(config)


def run_caption(config: JobConfig) -> int:
    """Plan and run the job; print its summary. Exit code: 0, 1 (errors with
    ``fail_on_error``), 3 (stalled); a job that cannot work raises ``UsageError``."""
    # Imported here: they bring Ray and the models, which `vidcap --help` does not need.
    from pipelines.offline.cluster_check import OutputNotShared
    from pipelines.offline.inputs import InputError
    from pipelines.offline.job import plan_job, run_job
    from pipelines.offline.ledger.resume import RunConflict
    from pipelines.offline.ledger.stall import JobStalled

    try:
        tasks = plan_job(config)
    except (InputError, ValueError, OSError) as exc:
        # What the user asked cannot work: say what to change, no traceback.
        raise UsageError(str(exc)) from exc
    try:
        summary = run_job(config, tasks)
    except (RunConflict, OutputNotShared) as exc:
        raise UsageError(str(exc)) from exc
    except JobStalled as exc:
        print(f"vidcap: job stalled: {exc}", file=sys.stderr)
        return 3
    print(format_summary(summary))
    return 1 if config.fail_on_error and summary.error_rows else 0


def format_summary(s: Summary) -> str:
    lines = [
        ("inputs", s.inputs),
        ("videos with text", s.videos_with_text),
        ("clips captioned", s.clips),
        ("rows written", s.rows),
        ("error rows", s.error_rows),
        *((f"  {code}", n) for code, n in s.errors_by_code.items()),
        ("skipped (done before)", s.skipped_done),
        ("decode retries", s.retries),
        ("rework (clips)", s.rework),
        ("wall time (s)", f"{s.wall_s:.1f}"),
        ("clips/s", f"{s.clips_per_s:.2f}"),
        ("output tokens/s", f"{s.output_tokens_per_s:.1f}"),
        *((f"busy {k} (s)", f"{v:.1f}") for k, v in s.stage_busy_s.items()),
        ("clips dataset", s.clips_path),
    ]
    if s.videos_summarized or s.summary_errors or s.summaries_skipped_done:
        lines += [
            ("videos summarized", s.videos_summarized),
            ("summary errors", s.summary_errors),
            ("summaries done before", s.summaries_skipped_done),
            ("videos dataset", s.clips_path.rsplit("/", 1)[0] + "/videos"),
        ]
    if s.transcripts:
        t = s.transcripts
        lines += [
            ("videos transcribed", t["transcribed"]),
            ("  with subtitles instead", t["with_subtitles"]),
            *((f"  no transcript: {code}", n) for code, n in t["errors"].items()),
            ("audio transcribed (s)", f"{t['audio_s']:.1f}"),
            ("speech pass wall (s)", f"{t['wall_s']:.1f}"),
            ("transcripts dataset", s.clips_path.rsplit("/", 1)[0] + "/transcripts"),
        ]
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)
