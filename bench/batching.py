"""Benchmark: pad tokens of LM batches, fixed slices vs by prompt length under a token budget.

Run by hand (never in CI):  .venv/bin/python bench/batching.py [--clips 48] [--batch 8]

The LM stage alone (no Ray), tiny Qwen2-VL: clips of 4, 8 or 16 frames (32/64/128 visual
tokens, as scene chunking gives clips of different lengths) with a caption prompt whose
speech context runs from none to ~150 words, in random order. Each stage call gets what
Ray Data would hand the actor: ``batch`` rows before (one generate call each, arrival
order), ``GROUP_BATCHES x batch`` rows with ``--lm-batch-tokens`` (grouped by length).
Reports the prompt pad-token fraction, generate calls and wall time (CPU, indicative).
Figures go to bench/results/batching.json and, by hand, to bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def workload(n: int, seed: int = 0):
    import numpy as np

    from pipelines.core.records import Ask, Clip, ClipRef

    rng = np.random.default_rng(seed)
    words = "the speaker explains how the parts fit together and then shows it".split()
    clips = []
    for i in range(n):
        frames = int(rng.choice([4, 8, 16]))
        video = rng.integers(0, 255, (frames, 112, 112, 3), dtype=np.uint8)
        speech = " ".join(rng.choice(words, int(rng.integers(0, 150))))
        prompt = "Describe what happens." + (f"\nSpeech during this clip:\n{speech}" * bool(speech))
        ref = ClipRef(f"v{i}", "s", (Ask(prompt),), 0, 0.0, 2.0, (0.0,) * frames)
        clips.append(Clip(ref, video))
    return clips


def run(stage, items, per_call: int) -> dict:
    calls_before = 0
    t = time.perf_counter()
    results = []
    for i in range(0, len(items), per_call):
        results += stage(items[i : i + per_call])
        calls_before += 1
    wall = time.perf_counter() - t
    return {
        "pad_fraction": round(stage.pads.fraction, 4),
        "prompt_tokens_padded": stage.pads.padded,
        "pad_tokens": stage.pads.pad,
        "stage_calls": calls_before,
        "wall_s": round(wall, 2),
        "texts": [r.text for r in results],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args()

    import torch

    from pipelines.core.config import GenerationConfig, ModelConfig, PoolConfig
    from pipelines.models.tiny import build_tiny_model
    from pipelines.stages.encode import EncodeStage
    from pipelines.stages.generate import GROUP_BATCHES, GenerateStage

    torch.set_num_threads(1)  # what an actor with num_cpus=1 gets
    work = Path(tempfile.mkdtemp(prefix="vidcap-batching-"))
    model = ModelConfig(model=str(build_tiny_model("qwen2_vl", work / "tiny")))
    enc = EncodeStage(model, PoolConfig(batch_size=8))
    enc.setup()
    encoded = [e for c in workload(args.clips) for e in enc([c])]
    settings = GenerationConfig(max_new_tokens=args.max_new_tokens)

    before = GenerateStage(model, PoolConfig(batch_size=args.batch), settings)
    before.group_by_length = False
    before.setup()
    # `batch` rows of ~300 prompt tokens: calls of long prompts hold fewer rows, calls of
    # short ones up to `batch` (never more: the rows cap holds too).
    budget = args.batch * (300 + args.max_new_tokens)
    after = GenerateStage(model, PoolConfig(batch_size=args.batch, batch_tokens=budget), settings)
    after.family = before.family
    res = {
        "clips": args.clips,
        "batch": args.batch,
        "batch_tokens": budget,
        "max_new_tokens": args.max_new_tokens,
        "before": run(before, encoded, args.batch),
        "after": run(after, encoded, args.batch * GROUP_BATCHES),
    }
    same = res["before"].pop("texts") == res["after"].pop("texts")
    res["same_texts"] = same
    res["pad_fraction_ratio"] = round(
        res["after"]["pad_fraction"] / max(res["before"]["pad_fraction"], 1e-9), 3
    )
    print(json.dumps(res, indent=2))
    dest = ROOT / "bench" / "results" / "batching.json"
    dest.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
