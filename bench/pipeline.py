"""Benchmark: the Ray job vs a naive single-process loop, same inputs, same model.

Run by hand (never in CI):  .venv/bin/python bench/pipeline.py --runs 3

(a) naive loop: decode a clip -> processor(text, video) -> fused model.generate, one
    clip at a time, in this process with torch's default threads;
(b) the Ray job (`run_job`), Ray already started (start-up excluded), model loading
    included in both;
plus each stage alone (decode / encode / generate over all clips, one process, the
thread count an actor gets), to check that the pipelined job is close to its slowest
stage. Reports medians over --runs and writes bench/results/pipeline.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from pipelines.core.config import JobConfig  # noqa: E402
from pipelines.core.records import Clip  # noqa: E402
from pipelines.media import synth  # noqa: E402
from pipelines.models.tiny import build_tiny_model  # noqa: E402
from pipelines.offline.inputs import default_asks, expand_inputs  # noqa: E402
from pipelines.stages.decode import DecodeStage  # noqa: E402
from pipelines.stages.encode import EncodeStage  # noqa: E402
from pipelines.stages.generate import GenerateStage  # noqa: E402

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "media" / "corpus"
PROMPT = "Describe this clip."


def make_inputs(work: Path, n_synth: int, n_corpus: int) -> list[str]:
    paths = []
    for i in range(n_synth):
        p = work / f"synth-{i}.mp4"
        synth.write_video(p, seconds=20.0, fps=25.0, width=320, height=240, pattern="moving")
        paths.append(str(p))
    if CORPUS.is_dir():
        # Smallest files first keeps the run short while still real camera footage.
        files = sorted(CORPUS.iterdir(), key=lambda f: f.stat().st_size)[:n_corpus]
        paths += [str(f) for f in files]
    return paths


def naive_loop(config: JobConfig, sources: list[str]) -> tuple[float, int]:
    from transformers import AutoModelForImageTextToText, AutoProcessor
    from transformers.video_utils import VideoMetadata

    from pipelines.media.decode import iter_clips

    started = time.perf_counter()
    proc = AutoProcessor.from_pretrained(config.model.model)
    model = AutoModelForImageTextToText.from_pretrained(config.model.model).eval()
    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": PROMPT}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    clips = 0
    for source in sources:
        try:
            for c in iter_clips(source, config.decode):
                span = max(c.end_s - c.start_s, 1e-6)
                meta = [VideoMetadata(total_num_frames=len(c.frames), fps=len(c.frames) / span)]
                inputs = proc(
                    text=[text],
                    videos=[c.frames],
                    return_tensors="pt",
                    do_sample_frames=False,
                    video_metadata=meta,
                )
                with torch.inference_mode():
                    model.generate(
                        **inputs, max_new_tokens=config.generation.max_new_tokens, do_sample=False
                    )
                clips += 1
        except Exception as exc:  # a bad corpus file must not stop the baseline
            print(f"naive: skipped {source}: {exc}", file=sys.stderr)
    return time.perf_counter() - started, clips


def stages_alone(config: JobConfig, sources: list[str]) -> dict[str, float]:
    tasks = expand_inputs(sources, default_asks([PROMPT]))
    decode = DecodeStage(config.decode)
    t = time.perf_counter()
    clips = [c for task in tasks for c in decode.iter_outputs(task) if isinstance(c, Clip)]
    times = {"decode": time.perf_counter() - t}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what an actor with num_cpus=1 gets (OMP_NUM_THREADS=1)
    try:
        encode = EncodeStage(config.model, config.encoder)
        t = time.perf_counter()
        encode.setup()
        encoded = []
        for i in range(0, len(clips), encode.batch_size):
            encoded += encode(clips[i : i + encode.batch_size])
        times["encode"] = time.perf_counter() - t
        generate = GenerateStage(config.model, config.lm, config.generation)
        t = time.perf_counter()
        generate.setup()
        for i in range(0, len(encoded), generate.batch_size):
            generate(encoded[i : i + generate.batch_size])
        times["generate"] = time.perf_counter() - t
    finally:
        torch.set_num_threads(threads)
    times["clips"] = len(clips)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--synthetic", type=int, default=6, help="20 s synthetic videos (2 clips each)")
    ap.add_argument(
        "--corpus-files", type=int, default=12, help="smallest files of shared/media/corpus"
    )
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--encoder-batch", type=int, default=8)
    ap.add_argument("--lm-batch", type=int, default=16)
    args = ap.parse_args()

    import ray

    work = Path(tempfile.mkdtemp(prefix="vidcap-bench-"))
    sources = make_inputs(work, args.synthetic, args.corpus_files)
    model = build_tiny_model(
        "qwen2_vl", work / "model", hidden_size=args.hidden, num_layers=args.layers
    )
    base = dict(
        inputs=sources,
        prompts=[PROMPT],
        model={"model": str(model)},
        generation={"max_new_tokens": args.max_new_tokens},
        encoder={"batch_size": args.encoder_batch},
        lm={"batch_size": args.lm_batch},
    )
    ray.init(
        address="local",
        num_cpus=max(3, os.cpu_count() or 1),
        include_dashboard=False,
        configure_logging=False,
        log_to_driver=False,
    )
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    from pipelines.offline.job import run_job

    results: dict[str, list[float]] = {
        "naive_s": [],
        "job_s": [],
        "decode_s": [],
        "encode_s": [],
        "generate_s": [],
    }
    clips = 0
    for run in range(args.runs):
        cfg = JobConfig(out=str(work / f"out-{run}"), **base)
        naive_s, naive_clips = naive_loop(cfg, sources)
        t = time.perf_counter()
        summary = run_job(cfg)
        job_s = time.perf_counter() - t
        alone = stages_alone(cfg, sources)
        clips = summary.clips
        assert naive_clips == clips == alone["clips"], (naive_clips, clips, alone["clips"])
        results["naive_s"].append(naive_s)
        results["job_s"].append(job_s)
        for k in ("decode", "encode", "generate"):
            results[f"{k}_s"].append(alone[k])
        print(
            f"run {run}: clips={clips} naive={naive_s:.1f}s job={job_s:.1f}s "
            f"decode={alone['decode']:.1f}s encode={alone['encode']:.1f}s "
            f"generate={alone['generate']:.1f}s",
            flush=True,
        )
    med = {k: statistics.median(v) for k, v in results.items()}
    slowest = max(med["decode_s"], med["encode_s"], med["generate_s"])
    report = {
        "clips": clips,
        "videos": len(sources),
        "model": f"tiny qwen2_vl hidden={args.hidden} layers={args.layers}",
        "max_new_tokens": args.max_new_tokens,
        "batches": {"encoder": args.encoder_batch, "lm": args.lm_batch},
        "runs": args.runs,
        "cpu_count": os.cpu_count(),
        "median_s": {k: round(v, 2) for k, v in med.items()},
        "naive_clips_per_s": round(clips / med["naive_s"], 3),
        "job_clips_per_s": round(clips / med["job_s"], 3),
        "job_vs_naive_speedup": round(med["naive_s"] / med["job_s"], 3),
        "job_vs_slowest_stage": round(med["job_s"] / slowest, 3),
        "all_runs_s": {k: [round(x, 2) for x in v] for k, v in results.items()},
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
