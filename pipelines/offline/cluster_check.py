"""The driver-side check that a job's output is reachable from every node of its Ray cluster.

It runs in the job (``job.py``, once Ray is up), so it lives here rather than with ``vidcap
submit``: the client side cannot see it (a job API reached through a port-forward looks like
127.0.0.1), and the job must not import the command line.
"""

from __future__ import annotations

from urllib.parse import urlparse


class OutputNotShared(ValueError):
    """A local --out on a multi-node cluster: workers could not write where the driver reads."""


def check_workers_reach_out(out: str) -> None:
    """Refuse a plain local ``--out`` when the cluster has nodes besides the driver's.

    Workers write under ``--out`` too (the LM actors' journal), each on its own node's disk,
    and the driver could not find their files. A ``file://`` URI is taken as an explicit claim
    that the path is a filesystem shared by every node.
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
