"""``vidcap submit`` and ``vidcap jobs``: the offline job on a running Ray cluster.

The rules and the job API client are in ``pipelines.tools.submit``; this module parses the commands,
checks the forwarded ``caption`` command as a local run would, and reports.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pipelines.cli.job_flags import add_job_args, job_config_from_args, read_prompts_file
from pipelines.core.config import JobConfig
from pipelines.core.usage import UsageError
from pipelines.tools import submit


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
    sbm.set_defaults(func=cmd_submit)
    jobs = sub.add_parser("jobs", help="status, logs or stop of a submitted job")
    actions = jobs.add_subparsers(dest="action", required=True)
    for name, func, what in (
        ("status", cmd_jobs_status, "print the job's status"),
        ("logs", cmd_jobs_logs, "print the job's logs"),
        ("stop", cmd_jobs_stop, "stop the job"),
    ):
        act = actions.add_parser(name, parents=[api], help=what)
        act.add_argument("job_id", metavar="ID")
        if name == "logs":
            act.add_argument("--follow", action="store_true", help="until the job ends")
        act.set_defaults(func=func)


def split_command(command: list[str]) -> tuple[list[str], JobConfig]:
    """The ``caption`` command after ``--`` and the job it describes, checked like a local run
    would check it (without touching inputs or model: those live on the cluster)."""
    if command and command[0] == "--":
        command = command[1:]
    if not command or command[0] != "caption":
        raise UsageError("give the job after `--`: vidcap submit -- caption INPUT... --out URI")
    parser = argparse.ArgumentParser(prog="vidcap submit -- caption")
    add_job_args(parser)
    args = parser.parse_args(command[1:])  # a bad option exits 2 with argparse's message
    if args.address is not None:
        raise UsageError(
            "the submitted job joins the cluster it runs on: drop --address from the caption "
            "arguments and give the cluster's job API to `vidcap submit --address`"
        )
    if args.config is not None:
        # The job's driver runs on the head node, where this machine's path means nothing.
        raise UsageError(
            f"--config {args.config} names a file on this machine, not on the cluster: give "
            "its settings as flags (every JobConfig field has one, see `vidcap caption --help`)"
        )
    try:
        config = job_config_from_args(args)  # bounds and exclusive options, before anything is sent
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return inline_prompts_file(command, args), config


def inline_prompts_file(command: list[str], args: argparse.Namespace) -> list[str]:
    """``--prompts FILE`` names a file here, not on the cluster: send its prompts instead."""
    if not args.prompts:
        return command
    out, skip = [], False
    for token in command:
        if skip:
            skip = False
        elif token == "--prompts":
            skip = True
        elif not token.startswith("--prompts="):
            out.append(token)
    for prompt in read_prompts_file(args.prompts):
        out += ["--prompt", prompt]
    return out


def _guarded(fn):
    """Turn the cluster's refusals into a one-line message and exit 1."""

    def run(args: argparse.Namespace) -> int:
        from ray.exceptions import AuthenticationError

        try:
            return fn(args)
        except submit.ClusterError as exc:
            print(f"vidcap: error: {exc}", file=sys.stderr)
            return 1
        except (ConnectionError, AuthenticationError, RuntimeError) as exc:
            print(f"vidcap: error: job API at {args.address}: {exc}", file=sys.stderr)
            return 1

    run.__name__ = fn.__name__
    return run


@_guarded
def cmd_submit(args: argparse.Namespace) -> int:
    command, job = split_command(args.command)
    submit.check_output(job.out, args.address, args.out_is_shared)
    working_dir = Path(args.working_dir).resolve() if args.working_dir else submit.project_root()
    env = submit.runtime_env(working_dir, submit.parse_env(args.env))

    c = submit.client(args.address)
    job_id = c.submit_job(
        entrypoint=submit.entrypoint(command),
        runtime_env=env,
        submission_id=args.job_id,
        metadata={"vidcap": "caption"},
    )
    print(f"vidcap: submitted job {job_id} to {args.address}", flush=True)
    if args.no_wait:
        print(f"vidcap: follow it with `vidcap jobs logs --follow {job_id}`")
        return 0
    try:
        status = submit.follow(c, job_id)
    except KeyboardInterrupt:
        print(
            f"\nvidcap: stopped following; job {job_id} keeps running "
            f"(`vidcap jobs stop {job_id}` stops it)",
            file=sys.stderr,
        )
        return 130
    return _report(c, job_id, status)


def _report(c, job_id: str, status: str) -> int:
    info = c.get_job_info(job_id)
    # The message repeats the log tail we already printed: its first line is the reason.
    reason = (info.message or "").strip().splitlines()[:1]
    detail = f": {reason[0]}" if reason and status != "SUCCEEDED" else ""
    if info.driver_exit_code is not None and status != "SUCCEEDED":
        detail += f" (driver exit code {info.driver_exit_code})"
    print(f"vidcap: job {job_id} {status}{detail}", file=sys.stderr, flush=True)
    return 0 if status == "SUCCEEDED" else 1


@_guarded
def cmd_jobs_status(args: argparse.Namespace) -> int:
    info = submit.client(args.address).get_job_info(args.job_id)
    print(f"{args.job_id}  {info.status.value}" + (f"  {info.message}" if info.message else ""))
    return 0


@_guarded
def cmd_jobs_logs(args: argparse.Namespace) -> int:
    c = submit.client(args.address)
    if args.follow:
        return _report(c, args.job_id, submit.follow(c, args.job_id))
    print(c.get_job_logs(args.job_id), end="")
    return 0


@_guarded
def cmd_jobs_stop(args: argparse.Namespace) -> int:
    stopped = submit.client(args.address).stop_job(args.job_id)
    print(f"vidcap: job {args.job_id} " + ("stop requested" if stopped else "already finished"))
    return 0
