"""Benchmark: speech recognition throughput (audio seconds per wall second), tiny Whisper.

Run by hand (never in CI):  .venv/bin/python bench/asr.py --runs 3

The same inputs (synthetic videos with a tone track, 44.1 kHz AAC) and the same tiny
random-weight Whisper (built offline, ``build_tiny_whisper``) through

- **ours**: ``iter_audio_windows`` (streaming, 30 s windows overlapping by 5 s) ->
  ``TranscribeStage`` in batches of ``--batch`` windows (``merge_chunks`` at the end);
- **naive**: PyAV decodes the whole track into memory, resampled to 16 kHz mono, then the
  same 30 s / 5 s windows go one at a time through the feature extractor and ``generate``.

Both generate with the same settings (timestamps, language detection, ``--max-new-tokens``).
Model loading is excluded from both (done once before the runs). The two alternate inside each
run; each figure is the median over runs. Writes bench/results/asr.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.core.config import AsrConfig, DecodeConfig, ModelConfig, PoolConfig  # noqa: E402
from pipelines.media import synth_audio  # noqa: E402
from pipelines.media.audio import AUDIO_RATE, iter_audio_windows  # noqa: E402
from pipelines.models.whisper import build_tiny_whisper  # noqa: E402
from pipelines.stages.transcribe import TranscribeStage, merge_chunks  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "asr.json"
WINDOW_S, OVERLAP_S = 30.0, 5.0


def ours(stage: TranscribeStage, paths: list[str]) -> int:
    windows = 0
    for path in paths:
        results, batch = [], []
        for chunk in iter_audio_windows(path, DecodeConfig(), path, WINDOW_S, OVERLAP_S):
            batch.append(chunk)
            if len(batch) == stage.batch_size:
                results += stage(batch)
                batch = []
        if batch:
            results += stage(batch)
        merge_chunks(results)
        windows += len(results)
    return windows


def decode_whole_track(path: str) -> np.ndarray:
    resampler = av.AudioResampler(format="flt", layout="mono", rate=AUDIO_RATE)
    pieces = []
    with av.open(path) as container:
        for frame in container.decode(audio=0):
            pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    pieces += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(pieces)


def naive(model, processor, paths: list[str], max_new_tokens: int) -> int:
    window_n, hop_n = int(WINDOW_S * AUDIO_RATE), int((WINDOW_S - OVERLAP_S) * AUDIO_RATE)
    windows = 0
    for path in paths:
        audio = decode_whole_track(path)
        start = 0
        while True:
            window = audio[start : start + window_n]
            features = processor.feature_extractor(
                window, sampling_rate=AUDIO_RATE, return_tensors="pt"
            ).input_features
            with torch.inference_mode():
                model.generate(
                    features,
                    return_timestamps=True,
                    task="transcribe",
                    max_new_tokens=max_new_tokens,
                    force_unique_generate_call=True,
                )
            windows += 1
            if start + window_n >= len(audio):
                break
            start += hop_n
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=80.0, help="audio per video")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: its default)")
    args = parser.parse_args()
    if args.threads:
        # One thread, as an actor with num_cpus=1 gets; also steadier on a shared machine.
        torch.set_num_threads(args.threads)
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(args.videos):
            path = Path(tmp) / f"talk_{i}.mp4"
            third = args.seconds / 3
            tones = ((third, 300.0 + 100 * i), (third, 800.0), (third, 1200.0 - 50 * i))
            synth_audio.write_video_with_audio(path, tones=tones, sample_rate=44100)
            paths.append(str(path))
        model_dir = str(build_tiny_whisper(Path(tmp) / "whisper"))
        config = AsrConfig(
            model=ModelConfig(model=model_dir),
            pool=PoolConfig(batch_size=args.batch),
            max_new_tokens=args.max_new_tokens,
        )
        stage = TranscribeStage(config)
        stage.setup()
        processor = WhisperProcessor.from_pretrained(model_dir)
        model = WhisperForConditionalGeneration.from_pretrained(model_dir).eval()
        audio_s = args.videos * args.seconds
        times: dict[str, list[float]] = {"ours": [], "naive": []}
        counts = {}
        for run in range(args.runs):
            for name in ("ours", "naive") if run % 2 == 0 else ("naive", "ours"):
                start = time.perf_counter()
                if name == "ours":
                    counts[name] = ours(stage, paths)
                else:
                    counts[name] = naive(model, processor, paths, args.max_new_tokens)
                times[name].append(time.perf_counter() - start)
                print(f"run {run}: {name:5s} {times[name][-1]:6.1f} s ({counts[name]} windows)")
    result = {
        "audio_s": audio_s,
        "videos": args.videos,
        "batch": args.batch,
        "max_new_tokens": args.max_new_tokens,
        "torch_threads": torch.get_num_threads(),
        "windows": counts,
        "runs_s": times,
    }
    for name, runs in times.items():
        median = statistics.median(runs)
        result[f"{name}_median_s"] = median
        result[f"{name}_audio_s_per_s"] = audio_s / median
        print(f"{name:5s}: median {median:.1f} s, {audio_s / median:.1f} audio-s per wall-s")
    result["speedup"] = result["naive_median_s"] / result["ours_median_s"]
    print(f"ours vs naive: {result['speedup']:.2f}x")
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
