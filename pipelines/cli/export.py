"""``vidcap export``: captions as per-video SRT/WebVTT/JSON Lines files (``pipelines.tools.export``)."""

from __future__ import annotations

import argparse

from pipelines.core.usage import UsageError
from pipelines.tools import export


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="captions as per-video SRT/WebVTT/JSON Lines files")
    p.add_argument("out", metavar="OUT", help="the run's output folder or URI")
    p.add_argument("--format", choices=export.FORMATS, required=True)
    p.add_argument("--dest", default=None, help="folder (default: OUT/export/FORMAT)")
    p.add_argument(
        "--prompt-index",
        type=int,
        default=None,
        help="only the rows of this prompt (the prompt_index column; default: every prompt)",
    )
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    try:
        written = export.export(args.out, args.format, args.dest, args.prompt_index)
    except (export.RunNotFound, ValueError) as exc:
        raise UsageError(str(exc)) from exc
    where = args.dest or f"{args.out.rstrip('/')}/export/{args.format}"
    print(f"vidcap: {len(written)} {args.format} file(s) written to {where}")
    return 0
