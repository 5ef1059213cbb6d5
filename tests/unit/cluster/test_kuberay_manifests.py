"""KubeRay manifests: the fields KubeRay requires, and a Serve config Ray accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[3]
KUBERAY = ROOT / "deploy" / "kuberay"


def _load(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def _cluster_spec(doc: dict) -> dict:
    return doc["spec"]["rayClusterSpec" if doc["kind"] == "RayJob" else "rayClusterConfig"]


def _container(template: dict) -> dict:
    [container] = template["spec"]["containers"]
    return container


@pytest.mark.parametrize(
    ("name", "kind"), [("rayjob.yaml", "RayJob"), ("rayservice.yaml", "RayService")]
)
def test_cluster_spec_has_what_kuberay_requires(name, kind):
    doc = _load(name)
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == kind
    assert doc["metadata"]["name"]
    spec = _cluster_spec(doc)
    assert spec["rayVersion"].startswith("2.")
    assert spec["authOptions"] == {"mode": "token"}
    head = spec["headGroupSpec"]
    # KubeRay's rayStartParams is map[string]string: a bare number would be refused.
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_c = _container(head["template"])
    assert head_c["image"] and head_c["resources"]["limits"]
    assert {p["name"] for p in head_c["ports"]} >= {"gcs-server", "dashboard", "client"}

    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert set(groups) == {"cpu-decode", "gpu-model"}
    for g in groups.values():
        assert 0 <= g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        assert isinstance(g["rayStartParams"], dict)
        c = _container(g["template"])
        assert c["image"] == head_c["image"]
        assert c["resources"]["limits"]["cpu"] and c["resources"]["limits"]["memory"]
    # Decode lands where there is no GPU; the model actors where there is one.
    assert (
        "nvidia.com/gpu" not in _container(groups["cpu-decode"]["template"])["resources"]["limits"]
    )
    assert (
        _container(groups["gpu-model"]["template"])["resources"]["limits"]["nvidia.com/gpu"] == "1"
    )
    # ... and advertises only the CPU its one actor takes, so decode stays off it.
    assert groups["gpu-model"]["rayStartParams"] == {"num-cpus": "1"}


def test_rayjob_entrypoint_runs_caption_on_its_own_cluster():
    spec = _load("rayjob.yaml")["spec"]
    argv = spec["entrypoint"].split()
    assert argv[:2] == ["vidcap", "caption"]
    # Joins the cluster it runs on, writes where every pod can reach.
    assert argv[argv.index("--address") + 1] == "auto"
    assert argv[argv.index("--out") + 1].startswith(("s3://", "gs://"))
    assert spec["shutdownAfterJobFinishes"] is True
    # The entrypoint's options are real `vidcap caption` options.
    from pipelines.cli import build_parser

    args = build_parser().parse_args(argv[1:])
    assert args.command == "caption" and args.address == "auto"


def test_rayservice_embeds_the_serve_config_file():
    from ray.serve.schema import ServeDeploySchema

    from serve.config import ServeConfig

    embedded = yaml.safe_load(_load("rayservice.yaml")["spec"]["serveConfigV2"])
    schema = ServeDeploySchema.model_validate(embedded)
    [app] = schema.applications
    assert app.import_path == "serve.app:app_builder"
    ServeConfig.model_validate(app.args)
    # Same application as serve/config.yaml, so `serve deploy` and KubeRay run one thing.
    serve_file = yaml.safe_load((ROOT / "serve" / "config.yaml").read_text())
    assert embedded["applications"] == serve_file["applications"]
    assert embedded["http_options"]["port"] == serve_file["http_options"]["port"]
