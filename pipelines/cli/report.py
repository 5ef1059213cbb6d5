"""``vidcap report``: a self-contained HTML report of a run's output (``pipelines.tools.report``)."""

from __future__ import annotations

import argparse

from pipelines.core.usage import UsageError
from pipelines.tools import report
from pipelines.tools.export import RunNotFound


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value})")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="a self-contained HTML report of a run's output")
    p.add_argument("out", metavar="OUT", help="the run's output folder or URI")
    p.add_argument("--html", default=None, help="where to write it (default: OUT/report.html)")
    p.add_argument(
        "--max-videos",
        type=_count,
        default=report.DEFAULT_MAX_VIDEOS,
        help="videos shown with thumbnails and captions (default %(default)s)",
    )
    p.add_argument(
        "--thumbs-per-video",
        type=_count,
        default=report.DEFAULT_THUMBS_PER_VIDEO,
        help="thumbnails per video (default %(default)s)",
    )
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    try:
        dest = report.write_report(
            args.out, args.html, max_videos=args.max_videos, thumbs_per_video=args.thumbs_per_video
        )
    except RunNotFound as exc:
        raise UsageError(str(exc)) from exc
    print(f"vidcap: report written to {dest}")
    return 0
