"""A/B: the same `vidcap` command from two checkouts, alternating, on one machine.

Run by hand (never in CI). The other checkout is usually the commit before a change:

    git worktree add /tmp/base HEAD~1
    python3 -m venv /tmp/bv     # an interpreter whose site-packages are this venv's:
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/bv/lib/python3.11/site-packages/main.pth
    .venv/bin/python bench/ab.py --base /tmp/base --base-python /tmp/bv/bin/python --runs 3 \\
        -- caption /tmp/vidcap-scale/videos-2000 --out {out} --model /tmp/vidcap-scale/tiny-qwen2_vl \\
           --max-new-tokens 1 --commit-interval-s 5 --overwrite

``{out}`` in the command becomes a folder per side (under ``--work``). Each run is its own
process with its own local Ray; the figures are the process wall (what a user waits) and
summary.json's ``wall_s``, medians over runs; raw figures go to bench/results/ab.json.
Machines are noisy: only the two sides measured in the same run compare.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_side(python: str, root: str, args: list[str], out: Path) -> dict:
    argv = [a.replace("{out}", str(out)) for a in args]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "PYTHONPATH": root}
    started = time.perf_counter()
    proc = subprocess.run(
        [python, "-m", "pipelines.cli", *argv], cwd=root, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    res = {"rc": proc.returncode, "wall_s": round(wall, 2), "load": round(os.getloadavg()[0], 2)}
    summary = out / "summary.json"
    if summary.exists():
        s = json.loads(summary.read_text())
        res.update(summary_wall_s=s["wall_s"], rows=s["rows"], stage_busy_s=s["stage_busy_s"])
    if proc.returncode:
        res["tail"] = (proc.stdout + proc.stderr)[-1500:]
    return res


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--base", required=True, help="the other checkout's root")
    ap.add_argument("--base-python", default=sys.executable)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--work", default="/tmp/vidcap-ab")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="-- then vidcap's arguments")
    args = ap.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sides = {"base": (args.base_python, args.base), "new": (sys.executable, str(ROOT))}
    results: dict[str, list[dict]] = {side: [] for side in sides}
    for run in range(args.runs):
        for side, (python, root) in sides.items():
            res = run_side(python, root, command, Path(args.work) / f"out-{side}")
            results[side].append(res)
            print(side, run, json.dumps(res), flush=True)
    medians = {
        side: {
            key: statistics.median(r[key] for r in runs if key in r)
            for key in ("wall_s", "summary_wall_s")
            if any(key in r for r in runs)
        }
        for side, runs in results.items()
    }
    print("medians", json.dumps(medians))
    dest = ROOT / "bench" / "results" / "ab.json"
    dest.write_text(json.dumps({"command": command, "runs": results, "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
