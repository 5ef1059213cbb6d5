"""Benchmark: is the hand-off between encoder and LM bounded? Object-store peak, 500 vs 50 clips.

Run by hand (never in CI):  .venv/bin/python bench/handoff.py [--clips 50 500]

Each size is its own process with its own local Ray (as ``vidcap caption`` runs), the job
called in-process while a thread polls the object store's bytes in use every 0.2 s (the
raylet's store stats, the figure ``ray memory --stats-only`` prints). The LM is the slow
stage (tiny Qwen2-VL, 16 new tokens against a 1-layer encoder pass), so without a bound
every decoded and encoded clip would wait in the object store for it: the peak would grow
with the corpus. Videos are 10 s, 160x120, cut into 1 s clips of 4 frames (230 KB of
frames each; ``max_side_px`` 160, the videos' own size, so the job's budget
(``placement.object_store_budget``) is sized from clips as large as these). Goal (issue 17):
peak(500) <= 1.5 x peak(50).
Figures go to bench/results/handoff.json and, by hand, to bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

JOB = """
import json, sys, threading, time
import ray
from ray._private.internal_api import get_memory_info_reply, get_state_from_address

from pipelines.core.config import JobConfig
from pipelines.offline.job import init_ray, run_job

model, videos, out = sys.argv[1:4]
config = JobConfig(inputs=[videos], out=out, model={"model": model},
                   generation={"max_new_tokens": 16}, decode={"clip_s": 1.0, "max_side_px": 160},
                   encoder={"batch_size": 4}, lm={"batch_size": 4}, overwrite=True)
init_ray(config)
state = get_state_from_address(ray.get_runtime_context().gcs_address)
peak = {"bytes": 0, "samples": 0}
stop = threading.Event()

def poll():
    while not stop.is_set():
        used = get_memory_info_reply(state).store_stats.object_store_bytes_used
        peak["bytes"] = max(peak["bytes"], used)
        peak["samples"] += 1
        stop.wait(0.2)

thread = threading.Thread(target=poll, daemon=True)
thread.start()
started = time.perf_counter()
summary = run_job(config)
wall = time.perf_counter() - started
stop.set()
thread.join()
print("RESULT " + json.dumps({"clips": summary.clips, "rows": summary.rows,
      "error_rows": summary.error_rows, "wall_s": round(wall, 1),
      "object_store_peak_mb": round(peak["bytes"] / 2**20, 2), "samples": peak["samples"],
      "busy_s": summary.stage_busy_s}))
"""


def videos_for(work: Path, clips: int) -> Path:
    from pipelines.media import synth

    folder = work / f"videos-{clips}"
    if not folder.exists():
        folder.mkdir()
        for i in range(clips // 10):
            synth.write_video(
                folder / f"v{i:04d}.mp4", seconds=10.0, fps=4.0, width=160, height=120
            )
    return folder


def run(work: Path, model: str, clips: int) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    script = work / "job.py"
    script.write_text(JOB)
    folder = videos_for(work, clips)
    proc = subprocess.run(
        [sys.executable, str(script), model, str(folder), str(work / f"out-{clips}")],
        env=env,
        capture_output=True,
        text=True,
        cwd=work,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"rc": proc.returncode, "tail": (proc.stdout + proc.stderr)[-3000:]}
    return json.loads(lines[-1].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    from pipelines.models.tiny import build_tiny_model

    work = Path(args.work or tempfile.mkdtemp(prefix="vidcap-handoff-"))
    work.mkdir(parents=True, exist_ok=True)
    model = work / "tiny-qwen2_vl"
    if not model.exists():
        build_tiny_model("qwen2_vl", model)
    results: dict = {"when": time.strftime("%Y-%m-%d"), "cpus": os.cpu_count()}
    for n in args.clips:
        results[str(n)] = run(work, str(model), n)
        print(n, json.dumps(results[str(n)]), flush=True)
    small, large = (results.get(str(n), {}) for n in (min(args.clips), max(args.clips)))
    if "object_store_peak_mb" in small and "object_store_peak_mb" in large:
        ratio = large["object_store_peak_mb"] / max(small["object_store_peak_mb"], 1e-9)
        results["peak_ratio"] = round(ratio, 2)
        print("peak ratio", results["peak_ratio"], flush=True)
    dest = ROOT / "bench" / "results" / "handoff.json"
    dest.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
