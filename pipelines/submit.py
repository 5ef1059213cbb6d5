"""``vidcap submit`` and ``vidcap jobs``: run the offline job on a running Ray cluster.

The job goes through Ray's Job Submission API (the dashboard's HTTP port, 8265). The
driver then runs on the cluster's head node, so everything it names must make sense
there: the output must be a URI every node can reach, and the cluster's image must hold
the dependencies (we ship only the project's source as ``working_dir``, never a
virtualenv: wheels built for the submitting machine need not run on the cluster's).

Token auth (Ray >= 2.52): when the cluster runs with ``RAY_AUTH_MODE=token``, Ray's client
sends ``Authorization: Bearer <token>`` if this process also has ``RAY_AUTH_MODE=token``
and a token in ``RAY_AUTH_TOKEN``, the file named by ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token`` (that order). As a convenience we also send the header when
``RAY_AUTH_TOKEN``/``RAY_AUTH_TOKEN_PATH`` is set without the mode, since naming a token
explicitly says what is meant; the default file is only read under the mode, as Ray does.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import shlex
import sys
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_ADDRESS = "http://127.0.0.1:8265"

# Never shipped to the cluster: environments, VCS data, tests, caches, outputs, media and
# weights (Ray also honours .gitignore files in working_dir). Gitignore syntax.
WORKING_DIR_EXCLUDES = [
    # No trailing slashes: Ray matches each path without one, so "dir/" would not prune
    # the directory and Ray would walk all of it.
    ".venv",
    "venv",
    ".git",
    "__pycache__",
    "*.pyc",
    ".pytest_cache",
    ".ruff_cache",
    "*.egg-info",
    "/tests",
    "/bench/results",
    "/vidcap-demo-out",
    "*.mp4",
    "*.mkv",
    "*.webm",
    "*.mov",
    "*.avi",
    "*.parquet",
    "*.safetensors",
    "*.bin",
    "*.pt",
]

TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


class ClusterError(Exception):
    """The cluster could not be reached or refused the request; exit 1 without a traceback."""


# -- rules that need no cluster -----------------------------------------------------------


def is_loopback_address(address: str) -> bool:
    """True when the job API address is this machine (so the head node shares our disk)."""
    host = urlparse(address if "://" in address else f"http://{address}").hostname or ""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def is_local_path(uri: str) -> bool:
    """A path on one machine's disk: no scheme, or ``file://``."""
    scheme = urlparse(uri).scheme
    # A one-letter scheme is a Windows drive (C:\\out), still a local path.
    return scheme in ("", "file") or len(scheme) == 1


def check_output(out: str, address: str, out_is_shared: bool) -> None:
    """Refuse an output only the head node's disk would see, on a remote cluster."""
    from pipelines.cli import UsageError

    if is_loopback_address(address) or not is_local_path(out):
        return
    if out_is_shared and urlparse(out).scheme == "file":
        return
    if out_is_shared:
        raise UsageError(
            f"--out-is-shared needs the shared mount as a file:// URI (got {out!r}), e.g. "
            "file:///mnt/shared/captions, mounted at the same path on every node"
        )
    raise UsageError(
        f"--out {out!r} is a local path but {address} is a remote cluster: the job's driver "
        "runs on the cluster's head node and its workers on other nodes, so a local path "
        "would land on the head's disk, not on yours, and be lost with it. Write to storage "
        "every node can reach (s3://bucket/captions, gs://bucket/captions), or give a shared "
        "filesystem mounted at the same path on every node as file:///mnt/shared/... with "
        "--out-is-shared."
    )


class OutputNotShared(ValueError):
    """A local --out on a multi-node cluster: workers could not write where the driver reads."""


def check_workers_reach_out(out: str) -> None:
    """In the job's driver, once Ray is up: refuse a plain local ``--out`` when the cluster
    has nodes besides the driver's. Workers write under ``--out`` too (the LM actors'
    journal), each on its own node's disk, and the driver could not find their files.

    Catches what the client-side rule cannot see: a job API reached through a port-forward
    (``ray dashboard cluster.yaml``) looks like 127.0.0.1. A ``file://`` URI is taken as an
    explicit claim that the path is a filesystem shared by every node.
    """
    import ray

    scheme = urlparse(out).scheme
    if scheme and len(scheme) != 1:  # a URI (s3://, gs://, file://); C:\\ is a drive
        return
    here = ray.get_runtime_context().get_node_id()
    others = [n for n in ray.nodes() if n["Alive"] and n["NodeID"] != here]
    if others:
        raise OutputNotShared(
            f"--out {out!r} is a local path but this Ray cluster has {len(others)} other "
            "node(s): their workers would write under it on their own disks. Write to "
            "storage every node can reach (s3://..., gs://...), or spell a filesystem "
            "mounted at the same path on every node as file:///mnt/shared/..."
        )


def split_command(command: list[str]) -> tuple[list[str], argparse.Namespace]:
    """The ``caption`` command after ``--`` and its parsed options, checked like a local run
    would check them (without touching inputs or model: those live on the cluster)."""
    from pipelines.cli import UsageError, _add_caption_args, job_config_from_args

    if command and command[0] == "--":
        command = command[1:]
    if not command or command[0] != "caption":
        raise UsageError("give the job after `--`: vidcap submit -- caption INPUT... --out URI")
    parser = argparse.ArgumentParser(prog="vidcap submit -- caption")
    _add_caption_args(parser)
    args = parser.parse_args(command[1:])  # a bad option exits 2 with argparse's message
    if args.address is not None:
        raise UsageError(
            "the submitted job joins the cluster it runs on: drop --address from the caption "
            "arguments and give the cluster's job API to `vidcap submit --address`"
        )
    try:
        job_config_from_args(args)  # bounds and exclusive options, before anything is sent
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    return inline_prompts_file(command, args), args


def inline_prompts_file(command: list[str], args: argparse.Namespace) -> list[str]:
    """``--prompts FILE`` names a file here, not on the cluster: send its prompts instead."""
    if not args.prompts:
        return command
    from pipelines.cli import read_prompts_file

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


def entrypoint(command: list[str]) -> str:
    """Shell command the cluster runs: our CLI from the shipped source, joining that cluster.

    ``python -m`` runs the shipped ``working_dir`` (cwd, and first on the path) rather than
    whatever ``vidcap`` the image may have installed; ``--address auto`` joins the cluster
    the job runs on (Ray sets RAY_ADDRESS for the driver) instead of starting a new Ray.
    """
    return shlex.join(["python", "-m", "pipelines.cli", *command, "--address", "auto"])


def project_root() -> Path:
    root = Path(__file__).resolve().parents[1]
    if not (root / "pyproject.toml").is_file():
        from pipelines.cli import UsageError

        raise UsageError(
            f"vidcap is installed without its source tree ({root}); pass --working-dir "
            "with a checkout of the project"
        )
    return root


def runtime_env(working_dir: Path, env_vars: dict[str, str]) -> dict:
    env: dict = {"working_dir": str(working_dir), "excludes": list(WORKING_DIR_EXCLUDES)}
    if env_vars:
        env["env_vars"] = dict(env_vars)
    return env


def parse_env(pairs: list[str]) -> dict[str, str]:
    from pipelines.cli import UsageError

    out: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--env takes NAME=VALUE (got {pair!r})")
        out[name] = value
    return out


def auth_headers(environ: os._Environ | dict[str, str] = os.environ) -> dict[str, str]:
    """Authorization header for a token named explicitly while RAY_AUTH_MODE is unset.

    Under ``RAY_AUTH_MODE=token`` Ray's client loads the token itself (same sources), so
    nothing is added here.
    """
    if environ.get("RAY_AUTH_MODE", "").lower() == "token":
        return {}
    token = environ.get("RAY_AUTH_TOKEN", "").strip()
    path = environ.get("RAY_AUTH_TOKEN_PATH")
    if not token and path:
        try:
            token = Path(path).expanduser().read_text().strip()
        except OSError as exc:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={path} cannot be read: {exc}") from exc
        if not token:
            raise ClusterError(f"RAY_AUTH_TOKEN_PATH={path} is empty")
    return {"Authorization": f"Bearer {token}"} if token else {}


# -- talking to the cluster ----------------------------------------------------------------


def client(address: str):
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except (ConnectionError, AuthenticationError, RuntimeError) as exc:
        raise ClusterError(f"cannot use the job API at {address}: {exc}") from exc


def follow(c, job_id: str) -> str:
    """Print the job's logs as they come; return its final status."""
    import time

    async def tail() -> None:
        async for chunk in c.tail_job_logs(job_id):
            print(chunk, end="", flush=True)

    asyncio.run(tail())
    # The log stream closes when the driver exits; the status follows shortly after.
    status = str(c.get_job_status(job_id).value)
    while status not in TERMINAL:
        time.sleep(0.5)
        status = str(c.get_job_status(job_id).value)
    return status


def _guarded(fn):
    """Turn the cluster's refusals into a one-line message and exit 1."""

    def run(args: argparse.Namespace) -> int:
        from ray.exceptions import AuthenticationError

        try:
            return fn(args)
        except ClusterError as exc:
            print(f"vidcap: error: {exc}", file=sys.stderr)
            return 1
        except (ConnectionError, AuthenticationError, RuntimeError) as exc:
            print(f"vidcap: error: job API at {args.address}: {exc}", file=sys.stderr)
            return 1

    run.__name__ = fn.__name__
    return run


@_guarded
def cmd_submit(args: argparse.Namespace) -> int:
    command, caption = split_command(args.command)
    check_output(caption.out, args.address, args.out_is_shared)
    working_dir = Path(args.working_dir).resolve() if args.working_dir else project_root()
    env = runtime_env(working_dir, parse_env(args.env))

    c = client(args.address)
    job_id = c.submit_job(
        entrypoint=entrypoint(command),
        runtime_env=env,
        submission_id=args.job_id,
        metadata={"vidcap": "caption"},
    )
    print(f"vidcap: submitted job {job_id} to {args.address}", flush=True)
    if args.no_wait:
        print(f"vidcap: follow it with `vidcap jobs logs --follow {job_id}`")
        return 0
    try:
        status = follow(c, job_id)
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
    info = client(args.address).get_job_info(args.job_id)
    print(f"{args.job_id}  {info.status.value}" + (f"  {info.message}" if info.message else ""))
    return 0


@_guarded
def cmd_jobs_logs(args: argparse.Namespace) -> int:
    c = client(args.address)
    if args.follow:
        return _report(c, args.job_id, follow(c, args.job_id))
    print(c.get_job_logs(args.job_id), end="")
    return 0


@_guarded
def cmd_jobs_stop(args: argparse.Namespace) -> int:
    stopped = client(args.address).stop_job(args.job_id)
    print(f"vidcap: job {args.job_id} " + ("stop requested" if stopped else "already finished"))
    return 0
