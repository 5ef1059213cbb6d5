"""``vidcap`` command line: caption a corpus, build tiny offline models, run the demo."""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import sys
import tempfile
import threading
from pathlib import Path

from pydantic import ValidationError

from pipelines.config import DEFAULT_PROMPT, DecodeConfig, JobConfig
from pipelines.output import Summary


def _add_caption_args(p: argparse.ArgumentParser) -> None:
    d = DecodeConfig()
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="video files, directories, globs, manifests (.parquet/.jsonl/.csv) or URIs",
    )
    p.add_argument("--out", required=True, help="output directory or URI")
    p.add_argument("--model", default=None, help="hub id or local folder (default: %(default)s)")
    p.add_argument("--revision", default=None, help="hub revision of --model")
    p.add_argument(
        "--prompt",
        action="append",
        default=None,
        help="prompt for every clip; repeat it to ask several from one encoding "
        f"(default: {DEFAULT_PROMPT!r})",
    )
    p.add_argument(
        "--prompts",
        default=None,
        metavar="FILE",
        help="text file of prompts, one per line (blank lines and lines starting with # skipped)",
    )
    p.add_argument(
        "--question",
        action="append",
        default=None,
        help="question asked of every clip (rows with task=qa); repeatable",
    )
    p.add_argument(
        "--fps", type=float, default=None, help=f"frames sampled per second (default {d.fps})"
    )
    p.add_argument(
        "--num-frames", type=int, default=None, help="fixed frames per clip (instead of --fps)"
    )
    p.add_argument("--clip-s", type=float, default=d.clip_s, help="clip window in seconds")
    p.add_argument("--max-frames", type=int, default=d.max_frames, help="most frames per clip")
    p.add_argument(
        "--max-side-px", type=int, default=d.max_side_px, help="longest frame side after scaling"
    )
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--dtype", choices=["auto", "float32", "bfloat16", "float16"], default="auto")
    p.add_argument("--encoder-actors", type=int, default=1, help="vision-encoder actor pool size")
    p.add_argument("--lm-actors", type=int, default=1, help="language-model actor pool size")
    p.add_argument("--encoder-batch", type=int, default=4, help="clips per encoder call")
    p.add_argument("--lm-batch", type=int, default=4, help="clips per generate call")
    p.add_argument("--address", default=None, help="join a Ray cluster (auto, ray://host:10001)")
    p.add_argument("--fail-on-error", action="store_true", help="exit 1 if any row has an error")
    p.add_argument(
        "--overwrite", action="store_true", help="start clean instead of resuming what --out holds"
    )
    p.add_argument(
        "--video-key",
        choices=["stat", "content"],
        default="stat",
        help="input identity for resume: path+size+mtime, or a hash of the bytes",
    )
    p.add_argument(
        "--max-attempts",
        type=int,
        default=3,
        help="decode attempts that may kill a worker before the input is quarantined",
    )
    p.add_argument(
        "--stall-timeout-s",
        type=float,
        default=1800.0,
        help="fail, naming the stuck stage, when no row arrives for this long",
    )
    p.add_argument(
        "--summarize",
        action="store_true",
        help="also write videos/: one summary per video from its timestamped clip captions",
    )
    p.add_argument(
        "--summary-max-new-tokens", type=int, default=256, help="most tokens per summary"
    )
    p.add_argument(
        "--summary-model",
        default=None,
        help="text chat model (hub id or folder) that writes the summaries; default: --model",
    )
    p.add_argument(
        "--summary-context-tokens",
        type=int,
        default=None,
        help="token budget per summary call (default: the model's context); longer input is "
        "summarized in parts, then the parts together",
    )
    p.add_argument(
        "--commit-interval-s",
        type=float,
        default=30.0,
        help="commit finished videos at least this often",
    )


def read_prompts_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --prompts {path}: {exc}") from exc
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"--prompts {path} holds no prompt")
    return prompts


def job_prompts(args: argparse.Namespace) -> list[str]:
    """--prompt values, then --prompts file lines; the default only when no ask was given."""
    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += read_prompts_file(args.prompts)
    if not prompts and not args.question:
        prompts = [DEFAULT_PROMPT]
    return prompts


def job_config_from_args(args: argparse.Namespace) -> JobConfig:
    decode = {"clip_s": args.clip_s, "max_frames": args.max_frames, "max_side_px": args.max_side_px}
    if args.num_frames is not None:
        if args.fps is not None:
            raise ValueError("--fps and --num-frames are exclusive: give one")
        decode.update(num_frames=args.num_frames, fps=None)
    elif args.fps is not None:
        decode["fps"] = args.fps
    model = {"device": args.device, "dtype": args.dtype, "revision": args.revision}
    if args.model:
        model["model"] = args.model
    return JobConfig(
        inputs=args.inputs,
        out=args.out,
        prompts=job_prompts(args),
        questions=args.question or [],
        decode=decode,
        model=model,
        generation={
            "max_new_tokens": args.max_new_tokens,
            "temperature": args.temperature,
            "top_p": args.top_p,
            "seed": args.seed,
        },
        encoder={
            "min_actors": args.encoder_actors,
            "max_actors": args.encoder_actors,
            "batch_size": args.encoder_batch,
        },
        lm={
            "min_actors": args.lm_actors,
            "max_actors": args.lm_actors,
            "batch_size": args.lm_batch,
        },
        address=args.address,
        fail_on_error=args.fail_on_error,
        overwrite=args.overwrite,
        video_key=args.video_key,
        max_attempts=args.max_attempts,
        stall_timeout_s=args.stall_timeout_s,
        commit_interval_s=args.commit_interval_s,
        summarize={
            "max_new_tokens": args.summary_max_new_tokens,
            "context_tokens": args.summary_context_tokens,
            "model": {**model, "model": args.summary_model, "revision": None}
            if args.summary_model
            else None,
        }
        if args.summarize
        else None,
    )


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
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in lines)


def _run_caption(config: JobConfig) -> int:
    from pipelines.inputs import InputError
    from pipelines.job import plan_job, run_job

    try:
        tasks = plan_job(config)
    except (InputError, ValueError, OSError) as exc:
        # What the user asked cannot work: say what to change, no traceback.
        raise UsageError(str(exc)) from exc
    from pipelines.resume import RunConflict
    from pipelines.stall import JobStalled
    from pipelines.submit import OutputNotShared

    try:
        summary = run_job(config, tasks)
    except (RunConflict, OutputNotShared) as exc:
        raise UsageError(str(exc)) from exc
    except JobStalled as exc:
        print(f"vidcap: job stalled: {exc}", file=sys.stderr)
        return 3
    print(format_summary(summary))
    return 1 if config.fail_on_error and summary.error_rows else 0


def cmd_caption(args: argparse.Namespace) -> int:
    try:
        config = job_config_from_args(args)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError too
        raise UsageError(str(exc)) from exc
    return _run_caption(config)


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from pipelines.models.tiny import build_tiny_model

    sizes = {"hidden_size": args.hidden_size, "num_layers": args.num_layers}
    try:
        path = build_tiny_model(args.family, args.out, **sizes)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    print(f"tiny random-weight {args.family} model written to {path}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import write_demo_videos
    from pipelines.models.tiny import build_tiny_model

    out = Path(args.out).resolve()
    work = Path(tempfile.mkdtemp(prefix="vidcap-demo-"))
    videos = write_demo_videos(work / "videos")
    model = build_tiny_model("qwen2_vl", work / "tiny-qwen2-vl")
    print(f"demo: {len(videos)} synthetic videos in {work / 'videos'}")
    print(
        "demo: captions come from a TINY RANDOM-WEIGHT model built offline — they are "
        "gibberish by design; use `vidcap caption ... --model Qwen/Qwen2-VL-2B-Instruct` "
        "for real captions."
    )
    config = JobConfig(
        inputs=[str(work / "videos")],
        out=str(out),
        model={"model": str(model)},
        generation={"max_new_tokens": 16},
        overwrite=True,  # each demo is a fresh run with a freshly built model
    )
    code = _run_caption(config)
    print(f"demo: Parquet dataset in {out / 'clips'}, summary in {out / 'summary.json'}")
    return code


def cmd_serve(args: argparse.Namespace) -> int:
    import ray
    import yaml
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    data = {}
    if args.config:
        data = yaml.safe_load(Path(args.config).read_text()) or {}
    if args.model:
        data["model"] = {**data.get("model", {}), "model": args.model}
    try:
        config = ServeConfig.model_validate(data)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.address:
        ray.init(address=args.address)
    else:
        # Like the offline job: a local Ray must fit every deployment's first replica, or
        # the endpoint would wait forever for CPUs (logical CPUs may exceed cores here).
        deployments = (config.ingress, config.decoder, config.encoder, config.lm)
        needed = sum(max(1, d.min_replicas) * d.num_cpus for d in deployments)
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, math.ceil(needed)),
            include_dashboard=False,
        )
    serve.start(http_options={"host": args.host, "port": args.port})
    try:
        app = build_app(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    serve.run(app, name="vidcap", route_prefix="/")
    print(
        f"vidcap: serving {config.model_name} at http://{args.host}:{args.port}/v1 "
        "(Ctrl-C to stop)",
        flush=True,
    )
    # Stop cleanly on Ctrl-C and on SIGTERM (process managers), so Ray's processes go too.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vidcap", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    cap = sub.add_parser("caption", help="caption a corpus of videos into Parquet")
    _add_caption_args(cap)
    cap.set_defaults(func=cmd_caption)
    tiny = sub.add_parser("tiny-model", help="build a tiny random-weight model folder offline")
    # Checked by the builder (which lists the families), so --help need not import torch.
    tiny.add_argument("--family", default="qwen2_vl", help="a model_type, e.g. qwen2_vl")
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--hidden-size", type=int, default=64)
    tiny.add_argument("--num-layers", type=int, default=2)
    tiny.set_defaults(func=cmd_tiny_model)
    srv = sub.add_parser("serve", help="run the OpenAI-compatible endpoint on a local Ray")
    srv.add_argument("--model", default=None, help="hub id or local folder (overrides --config)")
    srv.add_argument("--config", default=None, help="YAML file with ServeConfig fields")
    srv.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--address", default=None, help="join a Ray cluster instead of a local one")
    srv.set_defaults(func=cmd_serve)
    demo = sub.add_parser("demo", help="synthetic videos + tiny model, end to end, offline")
    demo.add_argument("--out", default="vidcap-demo-out")
    demo.set_defaults(func=cmd_demo)
    # Cluster operation: handlers in pipelines/submit.py (imports Ray only when run).
    from pipelines import submit

    api = argparse.ArgumentParser(add_help=False)
    api.add_argument(
        "--address",
        default=os.environ.get("RAY_API_SERVER_ADDRESS", submit.DEFAULT_ADDRESS),
        help="the cluster's job API (dashboard port; default $RAY_API_SERVER_ADDRESS or "
        "%(default)s, e.g. through `ray dashboard cluster.yaml`)",
    )
    sbm = sub.add_parser(
        "submit",
        parents=[api],
        help="run `caption` on a Ray cluster through its job API",
        usage="vidcap submit [options] -- caption INPUT... --out URI [caption options]",
    )
    sbm.add_argument("--no-wait", action="store_true", help="print the job id and return")
    sbm.add_argument("--working-dir", default=None, help="source shipped to the cluster")
    sbm.add_argument("--job-id", default=None, help="submission id (default: generated)")
    sbm.add_argument("--env", action="append", default=[], metavar="NAME=VALUE", help="job env var")
    sbm.add_argument(
        "--out-is-shared",
        action="store_true",
        help="--out is a file:// URI on a filesystem mounted at that path on every node",
    )
    sbm.add_argument("command", nargs=argparse.REMAINDER, help="-- caption ...")
    sbm.set_defaults(func=submit.cmd_submit)
    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    actions = jobs.add_subparsers(dest="action", required=True)
    for name, func, what in (
        ("status", submit.cmd_jobs_status, "print the job's status"),
        ("logs", submit.cmd_jobs_logs, "print the job's logs"),
        ("stop", submit.cmd_jobs_stop, "stop the job"),
    ):
        act = actions.add_parser(name, parents=[api], help=what)
        act.add_argument("job_id", metavar="ID")
        if name == "logs":
            act.add_argument("--follow", action="store_true", help="until the job ends")
        act.set_defaults(func=func)
    # Looking at results: handlers in pipelines/report.py and pipelines/export.py.
    from pipelines import export, report

    rep = sub.add_parser("report", help="a self-contained HTML report of a run's output")
    rep.add_argument("out", metavar="OUT", help="the run's output folder or URI")
    rep.add_argument("--html", default=None, help="where to write it (default: OUT/report.html)")
    rep.add_argument(
        "--max-videos",
        type=int,
        default=report.DEFAULT_MAX_VIDEOS,
        help="videos shown with thumbnails and captions (default %(default)s)",
    )
    rep.add_argument(
        "--thumbs-per-video",
        type=int,
        default=report.DEFAULT_THUMBS_PER_VIDEO,
        help="thumbnails per video (default %(default)s)",
    )
    rep.set_defaults(func=report.cmd_report)
    exp = sub.add_parser("export", help="captions as per-video SRT/WebVTT/JSON Lines files")
    exp.add_argument("out", metavar="OUT", help="the run's output folder or URI")
    exp.add_argument("--format", choices=export.FORMATS, required=True)
    exp.add_argument("--dest", default=None, help="folder (default: OUT/export/FORMAT)")
    exp.add_argument(
        "--prompt-index",
        type=int,
        default=None,
        help="only the rows of this prompt (the prompt_index column; default: every prompt)",
    )
    exp.set_defaults(func=export.cmd_export)
    return parser


class UsageError(Exception):
    """A mistake in the command or its inputs; reported without a traceback, exit 2."""


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return args.func(args)
    except (UsageError, ValidationError) as exc:
        print(f"vidcap: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
