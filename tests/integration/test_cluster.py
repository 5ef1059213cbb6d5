"""Cluster operation with real processes on loopback: a token-auth head node that runs jobs
sent by `vidcap submit`, and multi-node placement on a simulated CPU + GPU cluster.

Neither can share the session's in-process Ray, so both run Ray in other processes and
never touch it: the head is started and stopped by its own temp dir and address.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.media import synth

ROOT = Path(__file__).parents[2]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    # The job's driver runs `python -m pipelines.cli`: this venv's python must come first.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


@pytest.fixture(scope="module")
def head():
    """`ray start --head` on loopback ports with token auth; stopped by its own temp dir."""
    token = secrets.token_hex(16)
    # Short: Ray's socket paths live under it and must stay under 108 bytes.
    temp_dir = tempfile.mkdtemp(prefix="vcr-", dir="/tmp")
    gcs, dashboard = _free_port(), _free_port()
    server_env = _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    start = [
        str(BIN / "ray"), "start", "--head",
        "--node-ip-address", "127.0.0.1",
        "--port", str(gcs),
        "--dashboard-host", "127.0.0.1",
        "--dashboard-port", str(dashboard),
        "--dashboard-agent-listen-port", str(_free_port()),
        "--ray-client-server-port", str(_free_port()),
        "--num-cpus", "4",
        "--num-gpus", "0",
        "--temp-dir", temp_dir,
        "--disable-usage-stats",
    ]  # fmt: skip
    subprocess.run(start, env=server_env, check=True, capture_output=True, timeout=120)
    try:
        yield {
            "address": f"http://127.0.0.1:{dashboard}",
            # The client side: same mode and token, from the environment.
            "env": _env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token),
            "token": token,
        }
    finally:
        # `ray stop` with no address would stop every Ray on this machine, the session's
        # included: find this head's own processes through its temp dir instead.
        _stop_head(temp_dir, gcs)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _stop_head(temp_dir: str, gcs_port: int) -> None:
    """What `ray stop` would do, for this head only: Ray 2.60's `ray stop` takes no address
    and would stop every Ray on the machine, the session's and other runs' included.

    This head's processes name its temp dir or GCS port on their command line; workers
    and agents are their children.
    """
    import psutil

    mine = re.compile(rf"{re.escape(temp_dir)}|:{gcs_port}\b")
    roots = [
        p
        for p in psutil.process_iter(["cmdline"])
        if mine.search(" ".join(p.info["cmdline"] or []))
    ]
    procs = {p.pid: p for p in roots}
    for p in roots:
        try:
            procs.update({c.pid: c for c in p.children(recursive=True)})
        except psutil.NoSuchProcess:
            pass
    procs.pop(os.getpid(), None)
    for p in procs.values():
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(list(procs.values()), timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cluster-media") / "clip.mp4"
    synth.write_video(path, seconds=3.0, fps=10.0)
    return path


def _vidcap(*args: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "vidcap"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_submit_runs_a_caption_job_on_a_token_auth_head(head, video, tiny_model_dir, tmp_path):
    out = tmp_path / "captions"
    res = _vidcap(
        "submit", "--address", head["address"], "--",
        "caption", str(video), "--out", str(out),
        "--model", tiny_model_dir("qwen2_vl"),
        "--clip-s", "1", "--max-new-tokens", "4",
        env=head["env"],
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert "submitted job raysubmit_" in res.stdout
    assert "SUCCEEDED" in res.stderr
    table = pq.read_table(out / "clips")
    assert table.num_rows == 3  # 3 s of video in 1 s clips
    assert set(table.column("error_code").to_pylist()) == {""}
    assert all(table.column("text").to_pylist())
    job_id = res.stdout.split("submitted job ")[1].split()[0]

    status = _vidcap("jobs", "status", "--address", head["address"], job_id, env=head["env"])
    assert status.returncode == 0 and "SUCCEEDED" in status.stdout
    logs = _vidcap("jobs", "logs", "--address", head["address"], job_id, env=head["env"])
    assert "--address auto" in logs.stdout  # the driver joined this cluster


def test_job_api_refuses_a_client_without_the_token(head):
    env = {k: v for k, v in head["env"].items() if not k.startswith("RAY_AUTH")}
    res = _vidcap("jobs", "status", "--address", head["address"], "raysubmit_x", env=env)
    assert res.returncode == 1
    assert "Authentication required" in res.stderr
    # The token alone (no RAY_AUTH_MODE) is enough for our client: we send the header.
    env["RAY_AUTH_TOKEN"] = head["token"]
    res = _vidcap("jobs", "status", "--address", head["address"], "raysubmit_x", env=env)
    assert "does not exist" in res.stderr


def test_a_job_with_bad_arguments_ends_failed_and_submit_exits_non_zero(head, video, tmp_path):
    res = _vidcap(
        "submit", "--address", head["address"], "--",
        "caption", str(video), "--out", str(tmp_path / "never"),
        "--model", str(tmp_path / "no-such-model"),
        env=head["env"],
    )  # fmt: skip
    assert res.returncode == 1, res.stdout[-3000:] + res.stderr[-3000:]
    assert "FAILED" in res.stderr and "driver exit code 2" in res.stderr
    assert not (tmp_path / "never" / "clips").exists()


PLACEMENT_SCRIPT = """
import json, os, sys
import ray
from ray.cluster_utils import Cluster

from pipelines.core.config import JobConfig
from pipelines.offline.job import run_job

model, video, out, probe_file = sys.argv[1:5]

def probe_hook():
    # Runs at the start of every worker process of the job: records, per stage, which node
    # the work ran on and which device the model chose there.
    import json, os
    import ray
    import torch
    from pipelines.stages.decode import DecodeStage
    from pipelines.stages.encode import EncodeStage
    from pipelines.stages.generate import GenerateStage

    def record(**fields):
        fields["node_id"] = ray.get_runtime_context().get_node_id()
        with open(os.environ["PROBE_FILE"], "a") as f:
            f.write(json.dumps(fields) + "\\n")

    def wrap_setup(cls):
        setup = cls.setup
        def probed(self):
            setup(self)
            modules = [v for v in vars(self.family).values() if isinstance(v, torch.nn.Module)]
            record(stage=self.name, device=str(self.family.device),
                   param_devices=sorted({str(p.device) for m in modules
                                         for p in m.parameters()}),
                   ray_gpu_ids=[str(g) for g in ray.get_gpu_ids()],
                   torch_cuda=torch.cuda.is_available())
        cls.setup = probed

    wrap_setup(EncodeStage)
    wrap_setup(GenerateStage)
    iter_outputs = DecodeStage.iter_outputs
    def probed_iter(self, item):
        record(stage="decode")
        yield from iter_outputs(self, item)
    DecodeStage.iter_outputs = probed_iter

# The head is the CPU-only decode node (the driver runs there too). The model node declares
# GPUs it does not have, one per actor, and only the CPUs those actors take, as cluster.yaml's
# GPU group does: Ray Data does not keep CPU-only tasks off GPU nodes by itself (given a
# spare CPU there, a decode task did land on the GPU node).
cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 2, "num_gpus": 0, "include_dashboard": False},
)
gpu_node = cluster.add_node(num_cpus=2, num_gpus=2)
cluster.wait_for_nodes()
ray.init(
    address=cluster.address,
    runtime_env={
        "worker_process_setup_hook": probe_hook,
        "env_vars": {"PROBE_FILE": probe_file, "HF_HUB_OFFLINE": "1",
                     "TRANSFORMERS_OFFLINE": "1"},
    },
)
config = dict(inputs=[video], model={"model": model}, generation={"max_new_tokens": 3},
              decode={"clip_s": 1.0}, address=cluster.address)
summary = run_job(JobConfig(out="file://" + out, **config))
try:
    run_job(JobConfig(out=out + "-plain", **config))
    refused = ""
except ValueError as exc:
    refused = str(exc)
print("RESULT " + json.dumps({
    "cpu_node": cluster.head_node.node_id, "gpu_node": gpu_node.node_id,
    "rows": summary.rows,
    "error_rows": summary.error_rows, "refused": refused,
}))
ray.shutdown()
cluster.shutdown()
"""


def test_decode_runs_on_cpu_nodes_and_models_on_gpu_nodes(tiny_model_dir, video, tmp_path):
    script = tmp_path / "placement.py"
    script.write_text(textwrap.dedent(PLACEMENT_SCRIPT))
    probe_file = tmp_path / "probe.jsonl"
    out = tmp_path / "out"
    res = subprocess.run(
        [sys.executable, str(script), tiny_model_dir("qwen2_vl"), str(video), str(out),
         str(probe_file)],
        env=_env(PYTHONPATH=str(ROOT)),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    [line] = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result["rows"] == 3 and result["error_rows"] == 0

    probes = [json.loads(ln) for ln in probe_file.read_text().splitlines()]
    by_stage: dict[str, list[dict]] = {}
    for p in probes:
        by_stage.setdefault(p["stage"], []).append(p)
    assert {p["node_id"] for p in by_stage["decode"]} == {result["cpu_node"]}
    for stage in ("encode", "generate"):
        [actor] = by_stage[stage]
        assert actor["node_id"] == result["gpu_node"]
        # Ray granted a (declared) GPU, yet torch sees none here: the model stays on CPU.
        assert actor["ray_gpu_ids"] and actor["torch_cuda"] is False
        assert actor["device"] == "cpu" and actor["param_devices"] == ["cpu"]

    # The same cluster refuses a plain local --out: workers on other nodes write under it.
    assert "other node(s)" in result["refused"]
