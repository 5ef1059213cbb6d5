"""``vidcap`` command line: one module per command, each a thin layer over the code it runs.

``caption`` (the offline job; its options are generated from ``JobConfig`` in ``job_flags``),
``tiny-model``, ``serve``, ``demo``, ``submit``/``jobs`` (a Ray cluster), ``report``, ``export``.
Below the CLI, nothing imports it: a mistake the user can fix is a ``UsageError``
(``pipelines.core.usage``), printed as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pydantic import ValidationError

from pipelines.cli import caption, demo, export, report, serve, submit, tiny_model
from pipelines.cli.caption import format_summary
from pipelines.cli.job_flags import job_config_from_args
from pipelines.core.usage import UsageError

# What notebooks and tests import from the CLI's top.
__all__ = ["UsageError", "build_parser", "format_summary", "job_config_from_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidcap", description="Caption a corpus of videos, serve an endpoint, look at runs."
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    caption.add_parser(sub)
    tiny_model.add_parser(sub)
    serve.add_parser(sub)
    demo.add_parser(sub)
    submit.add_parsers(sub)
    report.add_parser(sub)
    export.add_parser(sub)
    return parser


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
