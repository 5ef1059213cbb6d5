"""Benchmark: the speech-recognition pass inside a real job vs a naive loop, same inputs.

Run by hand (never in CI):  .venv/bin/python bench/asr_job.py --runs 3

- **job**: ``run_job`` with ``--asr`` on a local Ray (audio decode tasks -> the transcribe
  actor pool -> committed ``transcripts/``); the figure is the pass's own wall time as the
  job reports it (``summary.json`` ``transcripts.wall_s``: actor start-up included, the caption
  pass after it excluded);
- **naive**: ``bench/asr.py``'s loop — PyAV decodes each whole track into memory, then the
  30 s / 5 s windows go one at a time through the feature extractor and ``generate``; model
  loading excluded (the job's figure includes it, so the comparison favours the loop).

Tiny random-weight Whisper and Qwen2-VL, built offline; medians over ``--runs``. Writes
bench/results/asr_job.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import asr as loop  # noqa: E402  (bench/asr.py)
import torch  # noqa: E402
from transformers import WhisperForConditionalGeneration, WhisperProcessor  # noqa: E402

from pipelines.core.config import JobConfig  # noqa: E402
from pipelines.media import synth_audio  # noqa: E402
from pipelines.models.tiny import build_tiny_model  # noqa: E402
from pipelines.models.whisper import build_tiny_whisper  # noqa: E402
from pipelines.offline.job import run_job  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "asr_job.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--videos", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=120.0, help="audio per video")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="vidcap-asr-job-"))
    videos = work / "videos"
    videos.mkdir()
    for i in range(args.videos):
        tones = ((args.seconds / 2, 300.0 + 50 * i), (args.seconds / 2, 800.0 + 50 * i))
        synth_audio.write_video_with_audio(videos / f"talk{i}.mp4", tones=tones, fps=1.0)
    whisper = build_tiny_whisper(work / "whisper")
    vlm = build_tiny_model("qwen2_vl", work / "qwen")
    paths = sorted(str(p) for p in videos.iterdir())
    audio_s = args.videos * args.seconds

    processor = WhisperProcessor.from_pretrained(whisper)
    model = WhisperForConditionalGeneration.from_pretrained(whisper).eval()
    torch.set_grad_enabled(False)

    job_s, naive_s = [], []
    for run in range(args.runs):
        config = JobConfig(
            inputs=[str(videos)],
            out=str(work / f"out{run}"),
            model={"model": str(vlm)},
            generation={"max_new_tokens": 1},
            decode={"clip_s": 60.0, "fps": 0.1, "max_side_px": 64},
            asr={
                "model": {"model": str(whisper)},
                "pool": {"batch_size": args.batch},
                "max_new_tokens": args.max_new_tokens,
            },
        )
        summary = run_job(config)
        job_s.append(summary.transcripts["wall_s"])
        started = time.perf_counter()
        loop.naive(model, processor, paths, args.max_new_tokens)
        naive_s.append(time.perf_counter() - started)
        print(f"run {run}: job pass {job_s[-1]:.1f} s, naive loop {naive_s[-1]:.1f} s")

    job, naive = statistics.median(job_s), statistics.median(naive_s)
    result = {
        "videos": args.videos,
        "audio_s": audio_s,
        "batch": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "job_pass_s": job_s,
        "naive_s": naive_s,
        "job_audio_s_per_s": audio_s / job,
        "naive_audio_s_per_s": audio_s / naive,
        "job_vs_naive": naive / job,
    }
    RESULTS.parent.mkdir(exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2))
    print(
        f"{audio_s:.0f} s of audio: job pass {audio_s / job:.0f} audio-s/s (median {job:.1f} s), "
        f"naive loop {audio_s / naive:.0f} audio-s/s (median {naive:.1f} s): "
        f"{naive / job:.2f}x"
    )


if __name__ == "__main__":
    main()
