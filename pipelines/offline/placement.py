"""Where the job's model pools go, and whether they can go anywhere at all.

Before the dataset runs, the driver resolves every pool's ``num_gpus``
(``pipelines.core.gpu_share``: a whole GPU per actor when the GPUs hold every pool's
minimum, else fractions that let encoder and LM share a GPU) and checks that the pools at
their minimum size plus one decode task fit the cluster. Ray Data would otherwise wait
forever: on a 2-CPU head, one encoder and one LM actor take both CPUs and no decode task
ever runs, without a message.

The check packs actors onto nodes (first fit, largest first), so it also catches an actor
that no single node can hold (1 GPU and 8 CPUs on a cluster of 4-CPU GPU nodes). It uses
the nodes' *total* resources: what other jobs hold now is theirs to give back. When the
cluster autoscales, the job asks the autoscaler for the missing shapes and waits up to
``AUTOSCALE_WAIT_S`` before failing.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass

from pipelines.core.config import JobConfig, PoolConfig
from pipelines.core.gpu_share import GpuAsk, share_gpus
from pipelines.core.usage import UsageError
from pipelines.offline.ray_data import MAX_BLOCK_BYTES

log = logging.getLogger(__name__)

AUTOSCALE_WAIT_S = 600.0
"""How long a job on an autoscaling cluster waits for nodes before it fails."""
POLL_S = 5.0


class PlacementError(UsageError):
    """The cluster cannot hold the job's pools at their minimum size plus one decode task
    (the CLI exits 2 with this message, which names the missing resource)."""


@dataclass(frozen=True)
class Node:
    """Total resources of one node (memory in bytes; 0 when the node reports none)."""

    cpus: float
    gpus: float = 0.0
    memory: float = 0.0


@dataclass(frozen=True)
class Cluster:
    nodes: tuple[Node, ...]
    autoscaling: bool = False
    """True when a Ray autoscaler can add nodes (the check then waits before failing)."""

    def total(self, what: str) -> float:
        return sum(getattr(n, what) for n in self.nodes)


@dataclass(frozen=True)
class Bundle:
    """What one worker asks for: an actor of a pool, or a decode task."""

    who: str
    cpus: float
    gpus: float = 0.0
    memory: float = 0.0

    def describe(self) -> str:
        parts = [f"{self.cpus:g} CPU"]
        if self.gpus:
            parts.append(f"{self.gpus:g} GPU")
        if self.memory:
            parts.append(f"{self.memory / 1024**3:.1f} GiB memory")
        return f"{self.who} ({', '.join(parts)})"

    def ray_shape(self) -> dict[str, float]:
        shape = {"CPU": self.cpus}
        if self.gpus:
            shape["GPU"] = self.gpus
        if self.memory:
            shape["memory"] = self.memory
        return shape


def caption_pools(config: JobConfig) -> dict[str, PoolConfig]:
    """The pools of the caption pass, which run at the same time."""
    return {"encoder": config.encoder, "lm": config.lm}


def job_pools(config: JobConfig) -> dict[str, PoolConfig]:
    """Every model pool of the job by name (the speech-recognition pass's too, which runs
    alone before the caption pass), as ``resolve_pools`` and ``check`` take them."""
    pools = caption_pools(config)
    if config.asr is not None:
        pools["asr"] = config.asr.pool
    return pools


def resolve_pools(pools: Mapping[str, PoolConfig], cluster_gpus: float) -> dict[str, PoolConfig]:
    """Every pool with its ``num_gpus`` set (whole GPUs if they fit, else shared)."""
    asks = {name: GpuAsk(p.min_actors, p.num_gpus) for name, p in pools.items()}
    gpus = share_gpus(asks, cluster_gpus)
    return {name: p.model_copy(update={"num_gpus": gpus[name]}) for name, p in pools.items()}


def bundles(pools: Mapping[str, PoolConfig], decode_cpus: float) -> list[Bundle]:
    """The pools' actors at their minimum size, then one decode task."""
    out = [
        Bundle(f"{name} actor", p.num_cpus, p.num_gpus or 0.0)
        for name, p in pools.items()
        for _ in range(p.min_actors)
    ]
    return [*out, Bundle("decode task", decode_cpus)]


class _Room:
    """A node's free resources while bundles are packed; GPUs are kept per device, as Ray
    places a fraction of a GPU on one device."""

    def __init__(self, node: Node) -> None:
        self.cpus, self.memory = node.cpus, node.memory
        self.has_memory = node.memory > 0
        whole = int(node.gpus + 1e-9)
        self.gpus = [1.0] * whole + ([node.gpus - whole] if node.gpus - whole > 1e-9 else [])

    def lacks(self, b: Bundle) -> list[str]:
        missing = []
        if b.cpus > self.cpus + 1e-9:
            missing.append("CPU")
        if b.gpus and self._gpu_slots(b.gpus) is None:
            missing.append("GPU")
        if b.memory and self.has_memory and b.memory > self.memory:
            missing.append("memory")
        return missing

    def _gpu_slots(self, gpus: float) -> list[int] | None:
        if gpus >= 1:
            free = [i for i, g in enumerate(self.gpus) if g >= 1 - 1e-9]
            need = int(round(gpus))
            return free[:need] if len(free) >= need else None
        fit = [i for i, g in enumerate(self.gpus) if g >= gpus - 1e-9]
        # Best fit: fill the fullest device that still has room, keep whole ones whole.
        return [min(fit, key=lambda i: self.gpus[i])] if fit else None

    def take(self, b: Bundle) -> None:
        self.cpus -= b.cpus
        self.memory -= b.memory
        if b.gpus:
            for i in self._gpu_slots(b.gpus) or []:
                self.gpus[i] -= min(1.0, b.gpus)


def problems(pools: Mapping[str, PoolConfig], decode_cpus: float, cluster: Cluster) -> list[str]:
    """Why the pools (``num_gpus`` resolved) plus one decode task cannot be placed; empty
    when they can. Each message names the missing resource."""
    wanted = bundles(pools, decode_cpus)
    out = []
    for what, label, attr in (
        ("CPU", "CPU", "cpus"),
        ("GPU", "GPU", "gpus"),
        ("memory", "memory", "memory"),
    ):
        need = sum(getattr(b, attr) for b in wanted)
        have = cluster.total(attr)
        if what == "memory" and (not need or not have):
            continue  # memory is only checked when asked for and reported
        if need > have + 1e-9:
            parts = " + ".join(b.describe() for b in wanted if getattr(b, attr))
            out.append(
                f"not enough {label}: the job needs {need:g} {label} at its minimum size "
                f"({parts}) and the cluster has {have:g}"
            )
    if out:
        return out
    rooms = [_Room(n) for n in cluster.nodes]
    # Largest first (GPUs, then CPUs), so a big actor is not left without a node by small
    # ones; the decode task goes last: it needs what the actors leave.
    actors = sorted(wanted[:-1], key=lambda b: (b.gpus, b.cpus, b.memory), reverse=True)
    for b in [*actors, wanted[-1]]:
        room = next((r for r in rooms if not r.lacks(b)), None)
        if room is None:
            lacks = "; ".join(
                f"node {i + 1} lacks {' and '.join(r.lacks(b))} "
                f"({r.cpus:g} CPU, {sum(r.gpus):g} GPU left)"
                for i, r in enumerate(rooms)
            )
            return [
                f"no node can hold one {b.describe()} beside the actors placed before it: {lacks}"
            ]
        room.take(b)
    return []


def autoscaler_present(status_json: bytes | str | None, v2: bool) -> bool:
    """Whether a Ray autoscaler can add nodes, from the autoscaler v1 status record (the GCS
    key ``__autoscaling_status``) or the v2 flag.

    A plain ``ray start --head`` also runs the monitor, read-only: its node types are the
    anonymous ``node_<id>``; a real autoscaler reports the cluster config's node types.
    """
    if v2:
        return True
    if not status_json:
        return False
    try:
        report = json.loads(status_json).get("autoscaler_report") or {}
    except (ValueError, AttributeError):
        return False
    types = {*(report.get("active_nodes") or {}), *(report.get("pending_launches") or {})}
    types |= {*(report.get("idle_nodes") or {})}
    return any(not str(t).startswith("node_") for t in types)


def cluster_from_ray() -> Cluster:
    """The running Ray cluster's alive nodes and whether it autoscales."""
    import ray

    nodes = tuple(
        Node(
            cpus=n["Resources"].get("CPU", 0.0),
            gpus=n["Resources"].get("GPU", 0.0),
            memory=n["Resources"].get("memory", 0.0),
        )
        for n in ray.nodes()
        if n.get("Alive")
    )
    return Cluster(nodes, autoscaling=_autoscaling())


def _autoscaling() -> bool:
    # Ray's own internals (no public API says "this cluster autoscales"); any failure to
    # read them means "no", which only costs the bounded wait.
    try:
        from ray._private import ray_constants
        from ray.autoscaler.v2.utils import is_autoscaler_v2
        from ray.experimental.internal_kv import _internal_kv_get

        v2 = is_autoscaler_v2(fetch_from_server=True)
        return autoscaler_present(_internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS), v2)
    except Exception:  # noqa: BLE001
        return False


def place(
    pools: Mapping[str, PoolConfig],
    decode_cpus: float,
    *,
    wait_s: float = AUTOSCALE_WAIT_S,
    read_cluster=cluster_from_ray,
) -> dict[str, PoolConfig]:
    """Resolve the pools' ``num_gpus`` on the running cluster and check they fit; raise
    ``PlacementError`` naming what is missing (after up to ``wait_s`` on an autoscaling
    cluster)."""
    cluster = read_cluster()
    resolved = resolve_pools(pools, cluster.total("gpus"))
    found = problems(resolved, decode_cpus, cluster)
    if not found:
        return resolved
    if cluster.autoscaling and wait_s > 0:
        shapes = [b.ray_shape() for b in bundles(resolved, decode_cpus)]
        log.warning(
            "the cluster autoscales: waiting up to %.0f s for nodes to hold the job (%s)",
            wait_s,
            "; ".join(found),
        )
        _request(shapes)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            time.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))
            cluster = read_cluster()
            # Pools keep the shares resolved at the start: GPUs arriving later must not
            # turn the shapes asked of the autoscaler into other ones.
            found = problems(resolved, decode_cpus, cluster)
            if not found:
                return resolved
        found = [f"{p} (after waiting {wait_s:.0f} s for the autoscaler)" for p in found]
    raise PlacementError("this Ray cluster cannot place the job: " + "; ".join(found))


def _request(shapes: list[dict[str, float]]) -> None:
    try:
        from ray.autoscaler.sdk import request_resources

        request_resources(bundles=shapes)
    except Exception as exc:  # noqa: BLE001 - a hint to the autoscaler, never required
        log.warning("could not ask the autoscaler for resources: %s", exc)


HANDOFF_BATCHES = 4
"""Batches of every model pool the object store may hold for the job at once: one in each
actor, one queued behind it, and the blocks on their way, so no actor waits for input.
(2 gave the same peak in bench/handoff.py: the budget is sized at the largest clip the
decode settings allow, above what real clips weigh.)"""


def clip_bytes_bound(config: JobConfig) -> int:
    """The most bytes of frames one clip can have under the job's decode settings."""
    d = config.decode
    if d.num_frames is not None:
        frames = d.num_frames
    elif d.chunking == "none":
        frames = d.max_frames
    else:
        longest = d.clip_s if d.chunking == "fixed" else d.max_clip_s
        frames = math.ceil(longest * (d.fps or 0)) + (d.frame_factor or 1)
    frames = min(d.max_frames, max(d.min_frames, frames))
    return frames * d.max_side_px * d.max_side_px * 3


def object_store_budget(config: JobConfig) -> int:
    """Ray Data's object-store budget for the job: what its pools hold at once, so that
    clips waiting for a slow LM stay bounded instead of growing with the corpus."""
    rows = sum(p.batch_size * p.max_actors for p in caption_pools(config).values())
    if config.lm.batch_tokens is not None:
        rows += config.lm.batch_size * config.lm.max_actors * 3  # the LM takes 4 batches
    return HANDOFF_BATCHES * rows * clip_bytes_bound(config)


def asr_object_store_budget(config: JobConfig) -> int:
    """The speech-recognition pass's object-store budget: the windows its pool holds at once
    (16 kHz float32 audio, ``window_s`` each) and two blocks of them on their way, so the
    decode tasks never wait behind a budget smaller than one block of windows."""
    assert config.asr is not None
    pool = config.asr.pool
    window_bytes = int(config.asr.window_s * 16_000 * 4)
    return HANDOFF_BATCHES * pool.batch_size * pool.max_actors * window_bytes + 2 * MAX_BLOCK_BYTES
