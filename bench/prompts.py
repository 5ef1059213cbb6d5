"""Benchmark: one prompt vs four prompts per clip through the Ray job, same inputs and model.

Run by hand (never in CI):  .venv/bin/python bench/prompts.py --runs 3

For each run, side by side on one local Ray (started once, start-up excluded):
(a) the job with 1 prompt;
(b) the job with 4 prompts (the encoder runs once per clip, the LM answers all four);
(c) 4 jobs with 1 prompt each — what 4 prompts cost without sharing the encoding.
Reports medians over --runs, the (b)/(a) and (c)/(b) ratios, and the encoder's share of
busy time; writes bench/results/prompts.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.config import JobConfig  # noqa: E402
from pipelines.media import synth  # noqa: E402
from pipelines.models.tiny import build_tiny_model  # noqa: E402

PROMPTS = [
    "Describe the clip.",
    "List the objects you see.",
    "What moves, and where to?",
    "Which colours dominate?",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--videos", type=int, default=4)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidcap-bench-prompts-"))
    # Bigger than the test model so that the vision tower costs something, as in real models.
    model = build_tiny_model(
        "qwen2_vl", work / "model", hidden_size=256, num_layers=4, vision_dim=256, vision_depth=6
    )
    for i in range(args.videos):
        synth.write_video(
            work / f"v{i}.mp4", seconds=20.0, fps=25.0, width=320, height=240, pattern="moving"
        )
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, configure_logging=False)
    from pipelines.offline.job import run_job

    base = dict(
        inputs=[str(work / f"v{i}.mp4") for i in range(args.videos)],
        model={"model": str(model)},
        generation={"max_new_tokens": 24},
        decode={"max_side_px": 224},
        overwrite=True,
    )

    def job(prompts: list[str], tag: str) -> dict:
        started = time.perf_counter()
        s = run_job(JobConfig(out=str(work / f"out-{tag}"), prompts=prompts, **base))
        return {
            "wall_s": time.perf_counter() - started,
            "rows": s.rows,
            "clips": s.clips,
            "busy": s.stage_busy_s,
        }

    job(PROMPTS[:1], "warm")  # page in the model and Ray's workers once
    times: dict[str, list[float]] = {"one": [], "four_shared": [], "four_separate": []}
    last: dict[str, dict] = {}
    for run in range(args.runs):
        last["one"] = job(PROMPTS[:1], f"one-{run}")
        last["four_shared"] = job(PROMPTS, f"four-{run}")
        separate = [job([p], f"sep-{run}-{k}") for k, p in enumerate(PROMPTS)]
        last["four_separate"] = {
            "wall_s": sum(s["wall_s"] for s in separate),
            "rows": sum(s["rows"] for s in separate),
        }
        for key in times:
            times[key].append(last[key]["wall_s"])
        print(run, {k: round(v[-1], 2) for k, v in times.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "runs": args.runs,
        "videos": args.videos,
        "clips": last["one"]["clips"],
        "rows": {k: last[k]["rows"] for k in last},
        "median_wall_s": {k: round(v, 2) for k, v in med.items()},
        "times_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
        "four_shared_over_one": round(med["four_shared"] / med["one"], 2),
        "four_separate_over_four_shared": round(med["four_separate"] / med["four_shared"], 2),
        "busy_s_one": last["one"]["busy"],
        "busy_s_four_shared": last["four_shared"]["busy"],
    }
    print(json.dumps(result, indent=2))
    out = Path(__file__).parent / "results" / "prompts.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    ray.shutdown()


if __name__ == "__main__":
    main()
