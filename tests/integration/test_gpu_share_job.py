"""Placement on a Ray of its own: encoder and LM share one (logical) GPU and overlap, and a
job the cluster cannot hold exits 2 at once, naming the missing resource.

Each case needs a Ray sized differently from the session's, so it runs in a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pipelines.media import synth

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.slow

SHARED_GPU_SCRIPT = """
import json, sys
import ray

from pipelines.core.config import JobConfig
from pipelines.offline.job import run_job

model, videos, out, probe_file = sys.argv[1:5]

def probe_hook():
    # In every worker: record when each model stage loads and runs a batch, with the
    # resources Ray granted the actor.
    import json, os, time
    import ray
    from pipelines.stages.encode import EncodeStage
    from pipelines.stages.generate import GenerateStage

    def record(**fields):
        with open(os.environ["PROBE_FILE"], "a") as f:
            f.write(json.dumps({**fields, "pid": os.getpid()}) + "\\n")

    for cls in (EncodeStage, GenerateStage):
        setup, batch = cls.setup, cls.process_batch
        def probed_setup(self, setup=setup):
            setup(self)
            granted = ray.get_runtime_context().get_assigned_resources()
            record(stage=self.name, event="ready", t=time.time(), gpu=granted.get("GPU", 0))
        def probed_batch(self, items, batch=batch):
            start = time.time()
            out = batch(self, items)
            record(stage=self.name, event="batch", t=start, end=time.time(), n=len(items))
            return out
        cls.setup, cls.process_batch = probed_setup, probed_batch

ray.init(
    address="local", num_cpus=4, num_gpus=1, include_dashboard=False,
    runtime_env={"worker_process_setup_hook": probe_hook,
                 "env_vars": {"PROBE_FILE": probe_file, "HF_HUB_OFFLINE": "1",
                              "TRANSFORMERS_OFFLINE": "1"}},
)
config = JobConfig(inputs=[videos], out=out, model={"model": model},
                   generation={"max_new_tokens": 8}, decode={"clip_s": 1.0},
                   encoder={"batch_size": 1}, lm={"batch_size": 2})
summary = run_job(config)
print("RESULT " + json.dumps({"rows": summary.rows, "error_rows": summary.error_rows}))
ray.shutdown()
"""

FAIL_FAST_SCRIPT = """
import sys, time
import ray
from pipelines.cli import main

model, video, out = sys.argv[1:4]
# A 2-CPU cluster, like `ray start --head --num-cpus 2`: the encoder and LM actors would
# take both CPUs and no decode task could ever run.
ray.init(address="local", num_cpus=2, include_dashboard=False)
base = ["caption", video, "--model", model, "--max-new-tokens", "2"]
for name, extra in (("cpu", []), ("gpu", ["--lm-num-gpus", "1"])):
    started = time.monotonic()
    rc = main([*base, "--out", out + "-" + name, *extra])
    print(f"RC {name} {rc} {time.monotonic() - started:.1f}", flush=True)
ray.shutdown()
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT), **extra)
    return env


def _run(tmp_path: Path, script: str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(script))
    return subprocess.run(
        [sys.executable, str(path), *args],
        env=_env(),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_encoder_and_lm_share_one_gpu_and_overlap(tiny_model_dir, tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        synth.write_video(videos / f"v{i}.mp4", seconds=6.0, fps=8.0, width=64, height=48)
    probe_file = tmp_path / "probe.jsonl"
    res = _run(
        tmp_path,
        SHARED_GPU_SCRIPT,
        tiny_model_dir("qwen2_vl"),
        str(videos),
        str(tmp_path / "out"),
        str(probe_file),
        timeout=240,
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    [line] = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    result = json.loads(line.removeprefix("RESULT "))
    assert result == {"rows": 24, "error_rows": 0}

    probes = [json.loads(ln) for ln in probe_file.read_text().splitlines()]
    ready = {p["stage"]: p for p in probes if p["event"] == "ready"}
    batches = {s: [p for p in probes if p["event"] == "batch" and p["stage"] == s] for s in ready}
    # Both got a share of the one GPU, the LM the larger one, and neither a whole GPU.
    assert ready["encode"]["gpu"] == pytest.approx(0.3333)
    assert ready["generate"]["gpu"] == pytest.approx(0.6666)
    assert sum(p["n"] for p in batches["encode"]) == 24
    assert sum(p["n"] for p in batches["generate"]) == 24
    # Both actors alive at once: each was loaded before the other ran its last batch.
    assert ready["generate"]["t"] < max(p["end"] for p in batches["encode"])
    assert ready["encode"]["t"] < max(p["end"] for p in batches["generate"])
    # And they overlap: the LM's first batch starts before the encoder's last one (with a
    # whole GPU each, the LM actor could only start once the encoder's pool had finished).
    assert min(p["t"] for p in batches["generate"]) < max(p["t"] for p in batches["encode"])


def test_a_job_the_cluster_cannot_hold_exits_2_naming_the_resource(tiny_model_dir, tmp_path):
    video = tmp_path / "v.mp4"
    synth.write_video(video, seconds=2.0, fps=8.0, width=64, height=48)
    res = _run(
        tmp_path,
        FAIL_FAST_SCRIPT,
        tiny_model_dir("qwen2_vl"),
        str(video),
        str(tmp_path / "out"),
        timeout=180,
    )
    codes = {
        ln.split()[1]: int(ln.split()[2]) for ln in res.stdout.splitlines() if ln.startswith("RC ")
    }
    assert codes == {"cpu": 2, "gpu": 2}, res.stdout[-3000:] + res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("vidcap: error:")]
    assert len(errors) == 2
    assert "not enough CPU" in errors[0] and "needs 3 CPU" in errors[0] and "has 2" in errors[0]
    assert "not enough GPU" in errors[1] and "has 0" in errors[1]
    assert not (tmp_path / "out-cpu" / "clips").exists() or not any(
        (tmp_path / "out-cpu" / "clips").glob("*.parquet")
    )
