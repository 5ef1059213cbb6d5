"""Benchmark: peak RSS of ``iter_audio_windows`` over a 60-minute vs a 1-minute track.

Run by hand (never in CI):  .venv/bin/python bench/audio_rss.py [--codec aac]

Each track (a 440 Hz tone, 44.1 kHz mono in Matroska with a 16x16 video at 0.5 fps, written by
``synth_audio.write_long_audio``) is read by a fresh subprocess that iterates every 30 s window
(5 s overlap) and prints its own peak resident memory (``VmHWM``, via ``_peak.py``). Streaming
must keep it flat: goal 60-min <= 1.5x 1-min. The same child with the loop skipped gives the
interpreter + imports baseline, so the growth due to the windows themselves is visible too.

Writes bench/results/audio_rss.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.media import synth_audio  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "audio_rss.json"
CHILD = """
import sys
from pipelines.core.config import DecodeConfig
from pipelines.media.audio import iter_audio_windows
path, run = sys.argv[1], sys.argv[2] == "1"
n = seconds = 0
if run:
    for chunk in iter_audio_windows(path, DecodeConfig()):
        n += 1
        seconds = chunk.end_s
print("WINDOWS", n, "END_S", seconds)
"""


def peak_rss_mib(path: Path, run: bool = True) -> tuple[float, str]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "_peak.py"), "-c", CHILD, str(path), str(int(run))],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    lines = out.stdout.strip().splitlines()
    peak = next(int(line.split()[1]) for line in lines if line.startswith("PEAK_RSS_KB"))
    windows = next(line for line in lines if line.startswith("WINDOWS"))
    return peak / 1024, windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codec", default="pcm_s16le", help="audio codec (pcm_s16le, aac, ...)")
    parser.add_argument("--sample-rate", type=int, default=44100)
    args = parser.parse_args()
    result: dict = {"codec": args.codec, "sample_rate": args.sample_rate}
    with tempfile.TemporaryDirectory() as tmp:
        for minutes in (1, 60):
            path = Path(tmp) / f"tone_{minutes}min.mkv"
            start = time.perf_counter()
            synth_audio.write_long_audio(
                path, seconds=60 * minutes, sample_rate=args.sample_rate, audio_codec=args.codec
            )
            print(f"wrote {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in "
                  f"{time.perf_counter() - start:.1f} s")  # fmt: skip
            start = time.perf_counter()
            peak, windows = peak_rss_mib(path)
            result[f"{minutes}min_peak_rss_mib"] = peak
            result[f"{minutes}min_read_s"] = time.perf_counter() - start
            print(f"{minutes:2d}-min track: peak RSS {peak:.0f} MiB ({windows})")
            if minutes == 1:
                result["baseline_peak_rss_mib"] = peak_rss_mib(path, run=False)[0]
    result["ratio_60_to_1"] = result["60min_peak_rss_mib"] / result["1min_peak_rss_mib"]
    print(f"baseline (imports only): {result['baseline_peak_rss_mib']:.0f} MiB")
    print(f"ratio 60-min / 1-min: {result['ratio_60_to_1']:.3f}x (goal <= 1.5x)")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
