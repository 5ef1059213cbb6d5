"""GPU check of the tasks path (issue 7): several asks per clip, chat follow-ups, summaries.

Run on a CUDA machine without Ray (stages called directly), e.g. through
``bench/gpu_check.sh bench/gpu_tasks_check.py``; on a CPU-only machine it runs the same
checks on the CPU. Tiny random-weight models built offline; writes one JSON file.

1. One clip, 4 asks: the encoder runs once; each ask generated in one batch of 4 equals
   generating it alone (tokens), on the device in its default dtype (bf16 on CUDA).
2. A follow-up turn (2 earlier turns): split generate equals fused ``model.generate`` on the
   whole conversation.
3. Summaries by a separate text chat model (``TextLM``) on the device, with a budget small
   enough to force map-reduce: levels, calls, longest prompt within the budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor  # noqa: E402
from transformers.video_utils import VideoMetadata  # noqa: E402

from pipelines.core.config import (  # noqa: E402
    DecodeConfig,
    GenerationConfig,
    ModelConfig,
    PoolConfig,
    SummaryConfig,
)
from pipelines.core.records import Ask, EncodedClip, VideoTask, numbered  # noqa: E402
from pipelines.media import synth  # noqa: E402
from pipelines.models.base import GenRequest, stop_ids, until_stop  # noqa: E402
from pipelines.models.text_lm import build_tiny_text_lm  # noqa: E402
from pipelines.models.tiny import build_tiny_model  # noqa: E402
from pipelines.stages.decode import DecodeStage  # noqa: E402
from pipelines.stages.encode import EncodeStage  # noqa: E402
from pipelines.stages.generate import GenerateStage  # noqa: E402
from pipelines.stages.summarize import Line, SummarizeStage, VideoCaptions  # noqa: E402

PROMPTS = ["Describe the clip.", "List the objects.", "What moves?", "Which colours?"]


def placement(module: torch.nn.Module) -> dict:
    params = list(module.parameters())
    return {
        "devices": sorted({str(p.device) for p in params}),
        "dtypes": sorted({str(p.dtype) for p in params}),
    }


def check_asks(model: str, video: str) -> dict:
    cfg = ModelConfig(model=model)
    encode = EncodeStage(cfg, PoolConfig(batch_size=4))
    generate = GenerateStage(cfg, PoolConfig(batch_size=4), GenerationConfig(max_new_tokens=12))
    encode.setup()
    generate.setup()
    task = VideoTask("v", video, numbered([Ask(p) for p in PROMPTS]))
    [clip] = [c for c in DecodeStage(DecodeConfig(clip_s=30.0)).iter_outputs(task)][:1]
    [enc] = encode([clip])
    together = generate([EncodedClip(clip.ref.for_ask(a), enc.encoded) for a in task.asks])
    alone = [generate([EncodedClip(clip.ref.for_ask(a), enc.encoded)])[0] for a in task.asks]
    return {
        "encoder": placement(encode.family.visual_model),
        "lm": placement(generate.family.lm),
        "asks": len(task.asks),
        "batched_equals_alone": [
            (a.text, a.output_tokens) == (b.text, b.output_tokens)
            for a, b in zip(together, alone, strict=True)
        ],
        "distinct_answers": len({c.text for c in together}),
    }, (encode, generate, clip, enc)


def check_follow_up(model: str, encode, generate, clip, enc) -> dict:
    from safetensors.torch import load as load_tensors

    history = (("What is shown?", "Moving squares."), ("Which colour?", "Mostly red."))
    request = GenRequest(load_tensors(enc.encoded), "What happens next?", history)
    [split] = generate.family.generate([request], GenerationConfig(max_new_tokens=12))
    proc = AutoProcessor.from_pretrained(model)
    fused = AutoModelForImageTextToText.from_pretrained(model, dtype=generate.family.dtype)
    fused = fused.to(generate.family.device).eval()

    def text(t):
        return {"type": "text", "text": t}

    messages = [
        {"role": "user", "content": [{"type": "video"}, text(history[0][0])]},
        {"role": "assistant", "content": [text(history[0][1])]},
        {"role": "user", "content": [text(history[1][0])]},
        {"role": "assistant", "content": [text(history[1][1])]},
        {"role": "user", "content": [text("What happens next?")]},
    ]
    prompt = proc.apply_chat_template(messages, add_generation_prompt=True)
    frames = clip.frames
    fps = len(frames) / (clip.ref.end_s - clip.ref.start_s)
    inputs = proc(
        text=[prompt],
        videos=[frames],
        return_tensors="pt",
        do_sample_frames=False,
        video_metadata=[VideoMetadata(total_num_frames=len(frames), fps=fps)],
    ).to(generate.family.device)
    inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(generate.family.dtype)
    with torch.inference_mode():
        ref = fused.generate(**inputs, max_new_tokens=12, do_sample=False)
    # Cut where the split path cuts its rows (end-of-sequence or padding).
    stop = stop_ids(fused.generation_config, proc.tokenizer.pad_token_id)
    ref_tokens = until_stop(ref[0, inputs["input_ids"].shape[1] :].tolist(), stop)
    return {
        "split_equals_fused": list(split.token_ids) == ref_tokens,
        "prompt_tokens_equal": split.prompt_tokens == inputs["input_ids"].shape[1],
        "prompt_tokens": split.prompt_tokens,
    }


def check_summary(caption_model: str, text_lm: str) -> dict:
    summary = SummaryConfig(max_new_tokens=8, context_tokens=400, model=ModelConfig(model=text_lm))
    stage = SummarizeStage(ModelConfig(model=caption_model), PoolConfig(batch_size=4), summary)
    stage.setup()
    lines = tuple(
        Line(10.0 * i, 10.0 * i + 10, f"caption number {i} says a red ball rolls")
        for i in range(40)
    )
    started = time.perf_counter()
    [out] = stage([VideoCaptions("v", "/nowhere.mp4", "k", lines)])
    return {
        "model": type(stage.family).__name__,
        "lm": placement(stage.family.lm),
        "levels": out.levels,
        "lm_calls": out.lm_calls,
        "max_prompt_tokens": out.max_prompt_tokens,
        "budget": 400 - 8,
        "within_budget": out.max_prompt_tokens <= 400 - 8,
        "seconds": round(time.perf_counter() - started, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="gpu_tasks_check.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vidcap-gpu-tasks-"))
    model = str(build_tiny_model("qwen2_vl", work / "vlm"))
    text_lm = str(build_tiny_text_lm(work / "text-lm"))
    video = work / "v.mp4"
    synth.write_video(video, seconds=8.0, fps=10.0, width=96, height=64, pattern="moving")
    result: dict = {
        "cuda": torch.cuda.is_available(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }
    errors = []
    try:
        result["asks"], stages = check_asks(model, str(video))
        result["follow_up"] = check_follow_up(model, *stages)
    except Exception as exc:  # report and go on: one section must not hide the others
        errors.append(f"asks/follow_up: {exc!r}")
    try:
        result["summary"] = check_summary(model, text_lm)
    except Exception as exc:
        errors.append(f"summary: {exc!r}")
    result["errors"] = errors
    text = json.dumps(result, indent=2)
    print(text)
    Path(args.out).write_text(text + "\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
