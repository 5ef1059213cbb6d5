"""Running the offline job on a Ray cluster: the rules and the job API client behind
``vidcap submit`` and ``vidcap jobs`` (their commands are in ``pipelines.cli.submit``).

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

import asyncio
import ipaddress
import os
import shlex
from pathlib import Path
from urllib.parse import urlparse

from pipelines.core.usage import UsageError

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


def entrypoint(command: list[str]) -> str:
    """Shell command the cluster runs: our CLI from the shipped source, joining that cluster.

    ``python -m`` runs the shipped ``working_dir`` (cwd, and first on the path) rather than
    whatever ``vidcap`` the image may have installed; ``--address auto`` joins the cluster
    the job runs on (Ray sets RAY_ADDRESS for the driver) instead of starting a new Ray.
    """
    return shlex.join(["python", "-m", "pipelines.cli", *command, "--address", "auto"])


def project_root() -> Path:
    root = Path(__file__).resolve().parents[2]  # pipelines/tools/submit.py -> the checkout
    if not (root / "pyproject.toml").is_file():
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
