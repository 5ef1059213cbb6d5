"""cluster.yaml is a valid Ray cluster-launcher config and has the groups the pipeline needs."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[3]
CLUSTER = ROOT / "cluster.yaml"


def _prepared(config: dict) -> dict:
    # What `ray up` does before launching anything: merge the provider's defaults, then
    # validate against Ray's JSON schema and its cross-field rules.
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


def test_cluster_yaml_passes_rays_own_validation(config):
    prepared = _prepared(config)
    assert prepared["provider"]["type"] == "aws"
    assert prepared["head_node_type"] == "head"


def test_ray_validation_is_not_a_rubber_stamp(config):
    import jsonschema

    bad = copy.deepcopy(config)
    bad["available_node_types"]["cpu"]["min_wokers"] = 1  # a typo must not pass
    with pytest.raises(jsonschema.ValidationError):
        _prepared(bad)


def test_documented_docker_option_is_valid_too(config):
    # The commented `docker:` block is the documented alternative; keep it launchable.
    text = CLUSTER.read_text()
    block = re.search(r"^# docker:\n((?:#   .*\n)+)", text, re.MULTILINE)
    assert block, "cluster.yaml lost its documented docker option"
    docker = yaml.safe_load("docker:\n" + re.sub(r"^# ", "", block.group(1), flags=re.MULTILINE))
    assert docker["docker"]["image"].startswith("rayproject/ray:")
    prepared = _prepared({**config, **docker})
    assert prepared["docker"]["container_name"]


def test_groups_give_the_placement_the_pipeline_relies_on(config):
    types = config["available_node_types"]
    head, cpu, gpu = types["head"], types["cpu"], types["gpu"]
    # The head runs the driver only: no task or actor may land there.
    assert head["resources"]["CPU"] == 0 and head["max_workers"] == 0
    # Decode tasks ask for CPUs only: the CPU group offers CPUs and no GPU.
    assert cpu["resources"]["CPU"] >= 1 and cpu["resources"].get("GPU", 0) == 0
    # Encoder and LM actors ask for one GPU and PoolConfig.num_cpus each; the GPU group
    # offers no more CPUs than its actors take, so no decode task can land there.
    from pipelines.core.config import PoolConfig

    per_actor = PoolConfig().num_cpus
    assert gpu["resources"]["GPU"] >= 1
    assert gpu["resources"]["CPU"] == gpu["resources"]["GPU"] * per_actor
    for group in (cpu, gpu):
        assert 0 <= group["min_workers"] <= group["max_workers"]
    assert cpu["min_workers"] + gpu["min_workers"] <= config["max_workers"]
    assert gpu["node_config"]["InstanceType"].startswith(("g", "p"))


def test_setup_installs_the_project_and_the_dashboard_stays_on_loopback(config):
    assert config["file_mounts"]["~/vidcap"] == "."
    assert any("pip install" in c and "~/vidcap" in c for c in config["setup_commands"])
    head_start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start
    # Token auth on every Ray process, head and workers alike.
    for cmds in (config["head_start_ray_commands"], config["worker_start_ray_commands"]):
        assert "RAY_AUTH_MODE=token ray start" in " ".join(cmds)
    assert ".venv" in config["rsync_exclude"]
