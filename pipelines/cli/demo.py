"""``vidcap demo``: synthetic videos and a tiny model, end to end, offline."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from pipelines.cli.caption import run_caption
from pipelines.core.config import JobConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="synthetic videos + tiny model, end to end, offline")
    p.add_argument("--out", default="vidcap-demo-out")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.models.tiny import build_tiny_model
    from pipelines.models.whisper import build_tiny_whisper
    from pipelines.tools.demo import write_demo_videos

    out = Path(args.out).resolve()
    work = Path(tempfile.mkdtemp(prefix="vidcap-demo-"))
    videos = write_demo_videos(work / "videos")
    model = build_tiny_model("qwen2_vl", work / "tiny-qwen2-vl")
    whisper = build_tiny_whisper(work / "tiny-whisper")
    print(f"demo: {len(videos)} synthetic videos in {work / 'videos'}")
    print(
        "demo: captions come from a TINY RANDOM-WEIGHT model built offline — they are "
        "gibberish by design; use `vidcap caption ... --model Qwen/Qwen2-VL-2B-Instruct` "
        "for real captions. The speech recognizer is a tiny random-weight Whisper too: its "
        "transcripts are gibberish as well (`--asr` uses openai/whisper-large-v3-turbo)."
    )
    config = JobConfig(
        inputs=[str(work / "videos")],
        out=str(out),
        model={"model": str(model)},
        generation={"max_new_tokens": 16},
        # One video has a sidecar .srt, one an audio track: both reach their clips' prompts.
        asr={"model": {"model": str(whisper)}, "max_new_tokens": 24},
        overwrite=True,  # each demo is a fresh run with a freshly built model
    )
    code = run_caption(config)
    print(f"demo: Parquet dataset in {out / 'clips'}, summary in {out / 'summary.json'}")
    return code
