"""Placement: GPU shares per pool, and the fail-fast check that names what is missing."""

from __future__ import annotations

import json
import time

import pytest

from pipelines.core.config import PoolConfig
from pipelines.core.gpu_share import GpuAsk, share_gpus
from pipelines.core.usage import UsageError
from pipelines.offline.placement import (
    Cluster,
    Node,
    PlacementError,
    autoscaler_present,
    place,
    problems,
    resolve_pools,
)
from serve.config import DeploymentConfig, ServeConfig

ONE = PoolConfig()


def _pools(**over) -> dict[str, PoolConfig]:
    return {"encoder": over.pop("encoder", ONE), "lm": over.pop("lm", ONE), **over}


def _gpus(pools: dict[str, PoolConfig], gpus: float) -> dict[str, float | None]:
    return {n: p.num_gpus for n, p in resolve_pools(pools, gpus).items()}


def test_no_gpu_means_no_gpu_and_enough_gpus_mean_a_whole_one_each():
    assert _gpus(_pools(), 0) == {"encoder": 0.0, "lm": 0.0}
    assert _gpus(_pools(), 2) == {"encoder": 1.0, "lm": 1.0}
    two = PoolConfig(min_actors=2, max_actors=2)
    assert _gpus(_pools(lm=two), 3) == {"encoder": 1.0, "lm": 1.0}


def test_one_gpu_is_shared_with_the_larger_part_to_the_lm():
    shares = _gpus(_pools(), 1)
    assert shares["lm"] > shares["encoder"] > 0
    assert shares["encoder"] + shares["lm"] <= 1.0
    assert shares == {"encoder": 0.3333, "lm": 0.6666}  # Ray's 4-decimal grain, rounded down
    # And the shared pools then fit a one-GPU node beside a decode task.
    assert problems(resolve_pools(_pools(), 1), 1.0, Cluster((Node(cpus=4, gpus=1),))) == []


def test_more_groups_than_gpus_pack_several_groups_per_gpu():
    three = PoolConfig(min_actors=3, max_actors=3)
    shares = _gpus(_pools(lm=three), 1)
    assert 3 * shares["lm"] + shares["encoder"] <= 1.0
    assert shares["lm"] == pytest.approx(2 * shares["encoder"], abs=1e-4)
    # Two single-GPU nodes, two LMs and two encoders: whole GPUs do not fit (4 > 2), one
    # encoder+LM group per device does, whichever node each actor lands on.
    two = PoolConfig(min_actors=2, max_actors=2)
    pools = resolve_pools(_pools(encoder=two, lm=two), 2)
    assert pools["lm"].num_gpus == 0.6666
    nodes = Cluster((Node(cpus=4, gpus=1), Node(cpus=4, gpus=1)))
    assert problems(pools, 1.0, nodes) == []


def test_a_pool_that_sets_num_gpus_keeps_it_and_the_others_share_what_is_left():
    quarter = PoolConfig(num_gpus=0.25)
    assert _gpus(_pools(encoder=quarter), 1) == {"encoder": 0.25, "lm": 0.75}
    assert _gpus(_pools(encoder=PoolConfig(num_gpus=0)), 1) == {"encoder": 0.0, "lm": 1.0}
    # Both set: nothing is decided for them.
    assert _gpus(_pools(encoder=PoolConfig(num_gpus=1), lm=PoolConfig(num_gpus=1)), 1) == {
        "encoder": 1.0,
        "lm": 1.0,
    }


def test_a_third_pool_takes_its_share_too():
    shares = _gpus(_pools(asr=PoolConfig()), 1)
    assert shares["lm"] > shares["encoder"] == shares["asr"] > 0
    assert sum(shares.values()) <= 1.0
    assert share_gpus({"other": GpuAsk(1, None), "lm": GpuAsk(1, None)}, 1) == {
        "other": 0.3333,
        "lm": 0.6666,
    }


def test_a_two_cpu_head_cannot_hold_two_actors_and_a_decode_task():
    [msg] = problems(resolve_pools(_pools(), 0), 1.0, Cluster((Node(cpus=2),)))
    assert msg.startswith("not enough CPU")
    assert "needs 3 CPU" in msg and "has 2" in msg
    assert "decode task (1 CPU)" in msg and "lm actor (1 CPU)" in msg


def test_whole_gpus_asked_for_more_than_the_cluster_has_name_the_gpu():
    pools = _pools(encoder=PoolConfig(num_gpus=1), lm=PoolConfig(num_gpus=1))
    [msg] = problems(pools, 1.0, Cluster((Node(cpus=8, gpus=1),)))
    assert msg.startswith("not enough GPU") and "needs 2 GPU" in msg and "has 1" in msg


def test_an_actor_no_single_node_can_hold_is_named_with_the_resource():
    # 5 CPUs in all, but the GPU node has only 1 CPU for a 2-CPU LM actor with a GPU.
    pools = resolve_pools(_pools(lm=PoolConfig(num_cpus=2)), 1)
    nodes = Cluster((Node(cpus=4), Node(cpus=1, gpus=1)))
    [msg] = problems(pools, 1.0, nodes)
    assert msg.startswith("no node can hold one lm actor (2 CPU, 0.6666 GPU)")
    assert "node 1 lacks GPU" in msg and "node 2 lacks CPU" in msg


def test_enough_in_total_is_not_enough_when_split_over_the_wrong_nodes():
    # 3 CPUs and 2 GPUs in all, as needed; but once the encoder takes the GPU node's only
    # whole CPU, the LM finds a GPU without a CPU or CPUs without a GPU.
    nodes = Cluster((Node(cpus=1.5, gpus=2), Node(cpus=1.5)))
    [msg] = problems(resolve_pools(_pools(), 2), 1.0, nodes)
    assert msg.startswith("no node can hold one lm actor (1 CPU, 1 GPU)")
    assert "node 1 lacks CPU (0.5 CPU, 1 GPU left)" in msg and "node 2 lacks GPU" in msg
    # One more CPU on the GPU node and it fits, the decode task on the other node.
    assert problems(resolve_pools(_pools(), 2), 1.0, Cluster((Node(2, 2), Node(1.5)))) == []


def test_place_raises_a_usage_error_naming_the_resource():
    small = Cluster((Node(cpus=2),))
    with pytest.raises(PlacementError, match="not enough CPU") as info:
        place(_pools(), 1.0, read_cluster=lambda: small)
    assert isinstance(info.value, UsageError)  # the CLI prints it and exits 2


def test_an_autoscaling_cluster_is_waited_for_then_the_job_is_placed():
    reads = iter([Cluster((Node(cpus=2),), autoscaling=True)])
    grown = Cluster((Node(cpus=2), Node(cpus=4, gpus=1)), autoscaling=True)
    placed = place(_pools(), 1.0, wait_s=5, read_cluster=lambda: next(reads, grown))
    # The shares were resolved on the cluster as found (no GPU then): kept as asked.
    assert placed["lm"].num_gpus == 0.0


def test_an_autoscaling_cluster_that_never_grows_fails_after_the_bounded_wait():
    small = Cluster((Node(cpus=2),), autoscaling=True)
    started = time.monotonic()
    with pytest.raises(PlacementError, match=r"not enough CPU.*after waiting 1 s"):
        place(_pools(), 1.0, wait_s=1, read_cluster=lambda: small)
    assert 1 <= time.monotonic() - started < 10


def test_autoscaler_detection_from_the_status_record():
    def status(**report):
        return json.dumps({"load_metrics_report": {}, "autoscaler_report": report})

    assert not autoscaler_present(None, v2=False)
    assert autoscaler_present(None, v2=True)
    # `ray start --head` runs a read-only monitor: anonymous node types only.
    assert not autoscaler_present(status(active_nodes={"node_ab12": 1}), v2=False)
    assert autoscaler_present(
        status(active_nodes={"head": 1}, pending_launches={"gpu-worker": 1}), v2=False
    )
    assert not autoscaler_present(b"not json", v2=False)


def test_serve_shares_one_gpu_between_encoder_and_lm():
    config = ServeConfig()
    assert config.model_gpus(1) == {"encoder": 0.3333, "lm": 0.6666}
    assert config.model_gpus(2) == {"encoder": 1.0, "lm": 1.0}
    assert config.model_gpus(0) == {"encoder": 0.0, "lm": 0.0}
    pinned = ServeConfig(encoder=DeploymentConfig(num_gpus=0.5))
    assert pinned.model_gpus(1) == {"encoder": 0.5, "lm": 0.5}
    opts = config.lm.serve_options(True, config.model_gpus(1)["lm"])
    assert opts["ray_actor_options"]["num_gpus"] == 0.6666
