"""Fault injection with real processes: actor kill, driver kill + rerun, poison input,
stalled stage, node loss. Each run is its own `vidcap caption` process with its own
local Ray, so killing things never touches the test session's Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipelines.media import synth

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("fault-corpus")
    for i in range(10):
        synth.write_video(
            root / f"v{i:02d}.mp4", seconds=12.0, fps=10.0, width=64, height=48, pattern="moving"
        )
    return root


def caption(corpus, out, model, *extra, env=None) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "pipelines.cli",
        "caption",
        str(corpus),
        "--out",
        str(out),
        "--model",
        model,
        "--max-new-tokens",
        "24",
        "--commit-interval-s",
        "0",
        "--lm-batch",
        "2",
        "--encoder-batch",
        "2",
        *extra,
    ]
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", **(env or {})}
    # A session of its own: killing it takes its whole local Ray down, like a lost machine.
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, timeout_s: float = 240) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"vidcap did not finish in {timeout_s} s:\n{out[-3000:]}")
    return proc.returncode, out


def wait_for(predicate, timeout_s: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out waiting for {what}")


def committed(out: Path) -> list[Path]:
    return sorted((out / "clips").glob("part-*.parquet")) if (out / "clips").exists() else []


def check_exactly_once(out: Path, inputs: int) -> list[dict]:
    rows = pq.read_table(out / "clips").to_pylist()
    keys = [r["row_key"] for r in rows]
    assert len(keys) == len(set(keys)), "duplicate row keys"
    assert len({r["video_key"] for r in rows}) == inputs, "an input is missing"
    return rows


def pids_of(title: str) -> list[int]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split(None, 1)[0]) for line in ps.splitlines()[1:] if title in line]


def test_killing_an_lm_actor_mid_job_loses_and_duplicates_nothing(corpus, tiny_model_dir, tmp_path):
    started = time.monotonic()
    proc = caption(corpus, tmp_path, tiny_model_dir("qwen2_vl"))
    wait_for(lambda: committed(tmp_path), what="a first commit")
    wait_for(lambda: pids_of("GenerateActor"), what="the LM actor")
    victims = pids_of("GenerateActor")
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    code, log = finish(proc)
    assert code == 0, log[-3000:]
    rows = check_exactly_once(tmp_path, inputs=10)
    assert len(rows) == 20 and not any(r["error_code"] for r in rows)
    print(f"actor-kill: killed {victims}, wall {time.monotonic() - started:.1f} s")


@pytest.fixture(scope="module")
def big_corpus(corpus, tmp_path_factory):
    # Many short videos (2 clips each): the rework bound is about the videos in flight at
    # the kill, each of which can lose at most its own few clips.
    root = tmp_path_factory.mktemp("fault-big")
    for i in range(48):
        synth.write_video(
            root / f"v{i:02d}.mp4", seconds=20.0, fps=5.0, width=64, height=48, pattern="moving"
        )
    return root


def test_driver_killed_then_rerun_finishes_exactly_once_with_little_rework(
    big_corpus, tiny_model_dir, tmp_path
):
    corpus = big_corpus
    model = tiny_model_dir("qwen2_vl")
    started = time.monotonic()
    proc = caption(corpus, tmp_path, model)
    wait_for(lambda: len(committed(tmp_path)) >= 6, what="six commits")
    os.killpg(proc.pid, signal.SIGKILL)  # driver and its local Ray, like a preempted node
    proc.wait()
    before = pq.read_table(tmp_path / "clips").num_rows
    code, log = finish(caption(corpus, tmp_path, model))
    assert code == 0, log[-3000:]
    rows = check_exactly_once(tmp_path, inputs=48)
    assert len(rows) == 96
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["skipped_done"] >= 1 and summary["skipped_done"] + summary["processed"] == 48
    assert summary["rework"] <= 0.1 * len(rows), summary
    assert not (tmp_path / "_journal").exists() and not (tmp_path / "_attempts").exists()
    print(
        f"driver-kill: {before} rows committed before the kill, rework "
        f"{summary['rework']} of {len(rows)} clips, wall {time.monotonic() - started:.1f} s"
    )


def test_poison_input_is_quarantined_after_bounded_attempts(corpus, tiny_model_dir, tmp_path):
    poison_dir = tmp_path / "in"
    poison_dir.mkdir()
    for name in ("v00.mp4", "v01.mp4"):
        (poison_dir / name).symlink_to(corpus / name)
    synth.write_video(poison_dir / "crashme.mp4", seconds=2.0, fps=10.0)
    out = tmp_path / "out"
    started = time.monotonic()
    proc = caption(
        poison_dir,
        out,
        tiny_model_dir("qwen2_vl"),
        "--max-attempts",
        "2",
        env={"VIDCAP_FAULT_INJECT": "crash_decode=crashme.mp4"},
    )
    code, log = finish(proc)
    assert code == 0, log[-3000:]
    rows = check_exactly_once(out, inputs=3)
    poison = [r for r in rows if r["source"].endswith("crashme.mp4")]
    assert [(r["clip_index"], r["error_code"]) for r in poison] == [(-1, "worker_crash")]
    assert "quarantined after 2 attempts" in poison[0]["error_message"]
    assert all(not r["error_code"] for r in rows if r not in poison)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["retries"] == 2 and summary["errors_by_code"] == {"worker_crash": 1}
    print(f"poison: wall {time.monotonic() - started:.1f} s")


def test_a_stalled_stage_fails_the_job_naming_it(corpus, tiny_model_dir, tmp_path):
    started = time.monotonic()
    proc = caption(
        corpus,
        tmp_path,
        tiny_model_dir("qwen2_vl"),
        "--stall-timeout-s",
        "15",
        env={"VIDCAP_FAULT_INJECT": "hang_stage=generate"},
    )
    code, log = finish(proc, timeout_s=150)
    wall = time.monotonic() - started
    assert code == 3, log[-3000:]
    assert "job stalled: no progress for 15 s: stage 'generate'" in log, log[-2000:]
    print(f"stall: failed after {wall:.1f} s")


NODE_LOSS_SCRIPT = textwrap.dedent("""
    import json, sys, threading, time
    import ray
    from ray.cluster_utils import Cluster
    from pipelines.core.config import JobConfig
    from pipelines.offline.job import run_job

    corpus, out, model = sys.argv[1:4]
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 3})
    worker = cluster.add_node(num_cpus=2)
    ray.init(address=cluster.address)
    # file:// says the folder is shared by every node (here: one machine, two raylets).
    config = JobConfig(inputs=[corpus], out="file://" + out, model={"model": model},
                       generation={"max_new_tokens": 24}, commit_interval_s=0,
                       encoder={"batch_size": 2}, lm={"batch_size": 2})
    result = {}
    def run():
        result["summary"] = run_job(config).__dict__
    t = threading.Thread(target=run)
    t.start()
    import pathlib
    deadline = time.time() + 120
    while time.time() < deadline and not list(pathlib.Path(out, "clips").glob("part-*")):
        time.sleep(0.2)
    cluster.remove_node(worker)
    t.join(300)
    print("RESULT " + json.dumps({"alive": t.is_alive(), "summary": result.get("summary")}))
""")


def test_losing_a_worker_node_mid_job_completes(corpus, tiny_model_dir, tmp_path):
    script = tmp_path / "node_loss.py"
    script.write_text(NODE_LOSS_SCRIPT)
    out = tmp_path / "out"
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), str(corpus), str(out), tiny_model_dir("qwen2_vl")],
        capture_output=True,
        text=True,
        timeout=420,
        env={**os.environ, "RAY_ADDRESS": "", "HF_HUB_OFFLINE": "1"},
        cwd=Path(__file__).parents[2],
    )
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line, proc.stdout[-2000:] + proc.stderr[-3000:]
    result = json.loads(line[len("RESULT ") :])
    assert not result["alive"] and result["summary"], result
    rows = check_exactly_once(out, inputs=10)
    assert len(rows) == 20 and not any(r["error_code"] for r in rows)
    print(f"node-loss: wall {time.monotonic() - started:.1f} s")
