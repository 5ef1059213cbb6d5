"""What the video's text costs in prompt tokens: the same clips, with and without context.

A 60 s synthetic video with a sidecar .srt of dense speech (a cue every 2 s, ~2.5 words/s,
about the rate of a talk), 10 s clips, the tiny Qwen2-VL: prompt tokens per clip (visual
placeholders included) with the default context (budget 256 tokens) and with context off.
The tiny tokenizer is trained on a small corpus, so it spends more tokens per word than a
real one: read the figures as an upper bound for the text part.

    .venv/bin/python bench/context_tokens.py
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from pipelines.core.config import (
    ContextConfig,
    DecodeConfig,
    GenerationConfig,
    ModelConfig,
    PoolConfig,
)
from pipelines.core.records import VideoTask
from pipelines.media import synth
from pipelines.models.tiny import build_tiny_model
from pipelines.stages.decode import DecodeStage
from pipelines.stages.encode import EncodeStage
from pipelines.stages.generate import GenerateStage

WORDS = "the chef adds a pinch of salt and stirs the sauce slowly while it simmers".split()


def _srt(seconds: int) -> str:
    blocks = []
    for i, start in enumerate(range(0, seconds, 2)):
        words = " ".join(WORDS[(i * 5 + k) % len(WORDS)] for k in range(5))
        blocks.append(f"{i + 1}\n00:00:{start:02d},000 --> 00:00:{start + 2:02d},000\n{words}\n")
    return "\n".join(blocks)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="vidcap-ctx-"))
    video = work / "talk.mp4"
    synth.write_video(video, seconds=59.0, fps=4.0, width=96, height=64)
    (work / "talk.srt").write_text(_srt(58))
    model = ModelConfig(model=str(build_tiny_model("qwen2_vl", work / "tiny")))
    decode = DecodeConfig(clip_s=10.0, fps=1.0, max_side_px=96)
    task = VideoTask.with_prompt("talk", str(video), "Describe what happens in this clip.")
    clips = list(DecodeStage(decode, context=ContextConfig()).iter_outputs(task))
    encode = EncodeStage(model, PoolConfig(batch_size=8))
    encode.setup()
    encoded = encode(clips)
    settings = GenerationConfig(max_new_tokens=1)
    results = {}
    for name, context in (
        ("with context", ContextConfig()),
        ("without", ContextConfig(max_tokens=0)),
    ):
        stage = GenerateStage(model, PoolConfig(batch_size=8), settings, context)
        stage.setup()
        results[name] = stage(encoded)
    with_ctx, without = results["with context"], results["without"]
    print(f"{len(clips)} clips of 10 s, {sum(1 for c in clips if c.ref.speech)} with speech")
    for name, rows in results.items():
        print(
            f"{name:>13}: prompt tokens per clip median {statistics.median(r.prompt_tokens for r in rows):.0f}, "
            f"context tokens median {statistics.median(r.context_tokens for r in rows):.0f}, "
            f"cut {sum(r.context_cut_tokens for r in rows)}"
        )
    extra = [a.prompt_tokens - b.prompt_tokens for a, b in zip(with_ctx, without, strict=True)]
    ratio = statistics.median(
        a.prompt_tokens / b.prompt_tokens for a, b in zip(with_ctx, without, strict=True)
    )
    print(
        f"context adds a median {statistics.median(extra):.0f} prompt tokens per clip ({ratio:.2f}x)"
    )


if __name__ == "__main__":
    main()
