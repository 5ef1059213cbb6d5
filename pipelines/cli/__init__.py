"""``vidcap`` command line: one module per command, each a thin layer over the code it runs.

``caption`` (the offline job; its options are generated from ``JobConfig`` in ``job_flags``),
``tiny-model``, ``serve``, ``demo``, ``submit``/``jobs`` (a Ray cluster), ``report``, ``export``.
Below the CLI, nothing imports it: a mistake the user can fix is a ``UsageError``
(``pipelines.core.usage``), printed as one line with exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from pydantic import ValidationError

from pipelines.cli import caption, demo, export, report, serve, submit, tiny_model
from pipelines.cli.caption import format_summary
from pipelines.cli.job_flags import job_config_from_args
from pipelines.core.usage import UsageError

# What notebooks and tests import from the CLI's top.
__all__ = ["UsageError", "build_parser", "format_summary", "job_config_from_args", "main", "run"]


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


def run() -> NoReturn:
    """The ``vidcap`` program: ``main``, then an exit without the interpreter's teardown.

    By then the command has closed what it wrote (shards, summary) and Ray is shut down
    here; tearing down torch, transformers and Ray's core worker module by module takes
    ~1.2 s more per command (measured on a caption job) and frees nothing the OS does not.
    A command that raises leaves through the normal path, traceback included.
    """
    code = main()
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing left to say
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
