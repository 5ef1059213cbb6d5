"""Benchmark: 2-fps frame extraction, our decoder (exact and keyframes modes) vs the ffmpeg CLI.

Run by hand (never in CI):  .venv/bin/python bench/decode.py --runs 3

For every file of ``../shared/media/corpus``: frames every 0.5 s, scaled so the short side is
336 px (files already smaller keep their size), RGB24. ffmpeg runs
``ffmpeg -i F -vf fps=2,scale=W:H -f rawvideo -pix_fmt rgb24 -`` with its default threads;
ours runs ``iter_clips`` with 10 s clips at 2 fps (``max_side_px`` set to give the same size).
The three tools alternate inside each run, so load changes hit them alike; the figure per tool
is the median over runs of the total over files.

Then peak RSS (``VmHWM`` of a fresh subprocess; see ``rss_child``) of exact-mode decoding of a synthetic
60-minute and a 1-minute 320x240 video: streaming must keep it flat (goal: 60-min <= 2x 1-min).

Writes bench/results/decode.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.core.config import DecodeConfig  # noqa: E402
from pipelines.core.errors import MediaError  # noqa: E402
from pipelines.media import decode, synth  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "media" / "corpus"
RESULTS = Path(__file__).resolve().parent / "results" / "decode.json"
SHORT_SIDE_PX = 336
SAMPLE_FPS = 2.0


def output_size(path: str) -> tuple[int, int]:
    """Upright (width, height) with the short side scaled down to 336 px."""
    info = decode.probe(path, DecodeConfig())
    width, height = info.width, info.height
    if round(info.rotation_deg / 90) % 2:
        width, height = height, width
    scale = min(1.0, SHORT_SIDE_PX / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def run_ffmpeg(path: str, size: tuple[int, int]) -> int:
    width, height = size
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-vf",
         f"fps={SAMPLE_FPS:g},scale={width}:{height}", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    )  # fmt: skip
    return len(out.stdout) // (width * height * 3)


def run_ours(path: str, size: tuple[int, int], mode: str) -> int:
    cfg = DecodeConfig(clip_s=10.0, fps=SAMPLE_FPS, max_side_px=max(size), decode_mode=mode)
    return sum(len(clip.frame_ts_s) for clip in decode.iter_clips(path, cfg))


def time_corpus(files: list[tuple[str, tuple[int, int]]], runs: int) -> dict:
    tools = {
        "ffmpeg": run_ffmpeg,
        "exact": lambda p, s: run_ours(p, s, "exact"),
        "keyframes": lambda p, s: run_ours(p, s, "keyframes"),
    }
    totals: dict[str, list[float]] = {name: [] for name in tools}
    frames: dict[str, int] = {}
    for run in range(runs):
        for name, tool in tools.items():
            start, count = time.perf_counter(), 0
            for path, size in files:
                count += tool(path, size)
            totals[name].append(time.perf_counter() - start)
            frames[name] = count
            print(f"run {run + 1}/{runs} {name:9s} {totals[name][-1]:7.2f} s  {count} frames")
    median = {name: statistics.median(t) for name, t in totals.items()}
    return {
        "files": len(files),
        "runs": runs,
        "seconds_per_run": totals,
        "median_s": median,
        "ratio_to_ffmpeg": {name: median[name] / median["ffmpeg"] for name in tools},
        "frames": frames,
    }


def rss_child(path: str) -> None:
    for _ in decode.iter_clips(path, DecodeConfig()):
        pass
    # ru_maxrss is not enough on Linux: it survives execve and so includes the memory of the
    # parent this process was (v)forked from. VmHWM is the peak of this process's own memory.
    try:
        with open("/proc/self/status") as f:
            print(next(line.split()[1] for line in f if line.startswith("VmHWM:")))  # KiB
    except (OSError, StopIteration):
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux


def peak_rss_mib(path: str) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--rss-child", path], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip().splitlines()[-1]) / 1024


def measure_rss(workdir: Path) -> dict:
    result = {}
    for minutes in (1, 60):
        path = workdir / f"synthetic_{minutes}min_320x240.mp4"
        if not path.exists():
            start = time.perf_counter()
            synth.write_video(
                path, seconds=60 * minutes, fps=10, width=320, height=240, pattern="moving"
            )
            print(f"wrote {path.name} in {time.perf_counter() - start:.0f} s")
        result[f"{minutes}min_peak_rss_mib"] = peak_rss_mib(str(path))
        print(f"{minutes:2d}-min video: peak RSS {result[f'{minutes}min_peak_rss_mib']:.0f} MiB")
    result["ratio_60_to_1"] = result["60min_peak_rss_mib"] / result["1min_peak_rss_mib"]
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument("--skip-rss", action="store_true")
    parser.add_argument(
        "--workdir", type=Path, help="keep the synthetic RSS videos here (default: a temp dir)"
    )
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child)
        return
    if shutil.which("ffmpeg") is None:
        sys.exit("the ffmpeg CLI is needed (apt-get install -y ffmpeg)")
    files = []
    for path in sorted(p for p in args.corpus.iterdir() if p.is_file()):
        try:
            files.append((str(path), output_size(str(path))))
        except MediaError as e:
            print(f"skipping {path.name}: {e.code.value}")
    result = {
        "load_before": os.getloadavg(),
        "ffmpeg": subprocess.run(
            ["ffmpeg", "-version"], capture_output=True, text=True
        ).stdout.split("\n")[0],
        "cpus": os.cpu_count(),
        "corpus": time_corpus(files, args.runs),
    }
    if not args.skip_rss:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            result["rss"] = measure_rss(args.workdir)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result["rss"] = measure_rss(Path(tmp))
    result["load_after"] = os.getloadavg()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(json.dumps({k: result["corpus"][k] for k in ("median_s", "ratio_to_ffmpeg")}, indent=2))
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
