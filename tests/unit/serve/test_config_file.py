from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from serve.config import DeploymentConfig, ServeConfig

CONFIG = Path(__file__).parents[3] / "serve" / "config.yaml"


def test_serve_config_file_is_valid_for_ray_and_for_us():
    data = yaml.safe_load(CONFIG.read_text())
    schema = ServeDeploySchema.model_validate(data)
    [app] = schema.applications
    assert app.import_path == "serve.app:app_builder"
    assert schema.http_options.host == "127.0.0.1"
    config = ServeConfig.model_validate(app.args)
    # Unset: resolved from the cluster's GPUs, shared on a one-GPU machine.
    assert config.encoder.num_gpus is None and config.lm.num_gpus is None
    assert config.decoder.num_gpus is None
    assert config.lm.max_batch_size > 1


def test_deployment_options_carry_autoscaling_and_admission():
    opts = DeploymentConfig(
        min_replicas=1, max_replicas=3, max_queued_requests=5, num_gpus=None
    ).serve_options(gpus_available=True)
    assert opts["autoscaling_config"]["max_replicas"] == 3
    assert opts["max_queued_requests"] == 5
    assert opts["ray_actor_options"]["num_gpus"] == 1.0
    cpu = DeploymentConfig().serve_options(gpus_available=False)
    assert cpu["ray_actor_options"]["num_gpus"] == 0.0


def test_serve_config_refuses_unknown_keys():
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        ServeConfig.model_validate({"lm": {"replicas": 2}})


@pytest.mark.parametrize("model", ["ServeConfig", "DeploymentConfig", "SecurityConfig"])
def test_every_serve_field_is_documented(model):
    import serve.config as sc

    cls = getattr(sc, model)
    assert [n for n, f in cls.model_fields.items() if not f.description] == []


def test_inflight_limit_defaults_to_what_the_lm_can_hold():
    lm = {"max_replicas": 2, "max_ongoing_requests": 3, "max_queued_requests": 1}
    assert ServeConfig(lm=lm).inflight_limit == 6
    assert ServeConfig(lm=lm, ingress={"max_replicas": 2}).inflight_limit == 3
    assert ServeConfig(lm=lm, max_inflight=5).inflight_limit == 5
