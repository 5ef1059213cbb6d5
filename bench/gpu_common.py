"""What the GPU check's sections share: timing, memory peaks, synthetic clips, fused reference.

Imported by ``bench/gpu_check.py`` after it has set the offline environment.
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import traceback

import numpy as np
import torch

from pipelines.models.base import stop_ids, until_stop

T0 = time.perf_counter()
PROMPT = "Describe what happens in this video clip in one or two sentences."
PROMPTS4 = (
    PROMPT,
    "What objects and colours can you see?",
    "Summarize the clip in five words.",
    "Is the camera moving? Answer briefly.",
)
FPS = 2.0
# Qwen2-VL-2B-Instruct's text vocabulary (embedding and lm_head rows).
REAL_VOCAB = 151936


def log(msg: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {msg}", flush=True)


def has_cuda() -> bool:
    return torch.cuda.is_available()


def sync() -> None:
    if has_cuda():
        torch.cuda.synchronize()


def gib(n: int) -> float:
    return round(n / 2**30, 3)


def free_memory() -> None:
    gc.collect()
    if has_cuda():
        torch.cuda.empty_cache()


class Peak:
    """Peak GPU memory of a block (and what was resident when it started)."""

    def __enter__(self):
        if has_cuda():
            sync()
            self.start = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        return self

    def __exit__(self, *exc):
        if has_cuda():
            sync()
            self.result = {
                "resident_at_start_gib": gib(self.start),
                "peak_allocated_gib": gib(torch.cuda.max_memory_allocated()),
                "peak_reserved_gib": gib(torch.cuda.max_memory_reserved()),
            }
        else:
            self.result = None
        return False


def timed(fn, repeats: int = 3, warmup: int = 1):
    """Median wall time of ``fn`` (GPU synchronized) over ``repeats``, warm-up excluded."""
    for _ in range(warmup):
        fn()
    times, out = [], None
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times), [round(x, 4) for x in times], out


def synth_frames(n: int, h: int, w: int, seed: int) -> np.ndarray:
    """uint8 (n, h, w, 3): coloured sine gradients drifting a few pixels per frame."""
    rng = np.random.default_rng(seed)
    fx, fy = rng.uniform(0.5, 3.0, 2)
    vx, vy = rng.uniform(-8.0, 8.0, 2)
    phase = rng.uniform(0, 2 * np.pi, 3)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = np.empty((n, h, w, 3), dtype=np.uint8)
    for t in range(n):
        xs, ys = (x + vx * t) / w, (y + vy * t) / h
        r = np.sin(2 * np.pi * fx * xs + phase[0])
        g = np.sin(2 * np.pi * fy * ys + phase[1])
        b = np.sin(2 * np.pi * (fx * xs + fy * ys) + phase[2])
        frames[t] = (127.5 * (1.0 + np.stack([r, g, b], axis=-1))).astype(np.uint8)
    return frames


def with_prompt(ref, prompt: str, index: int = 0):
    from pipelines.core.records import Ask

    return ref.for_ask(Ask(prompt, index=index))


def make_clip(i: int, frames: np.ndarray, prompt: str = PROMPT):
    from pipelines.core.records import Ask, Clip, ClipRef

    n = len(frames)
    ref = ClipRef(
        video_id=f"synth-{i}",
        source=f"synthetic://{i}",
        asks=(Ask(prompt),),
        clip_index=0,
        start_s=0.0,
        end_s=n / FPS,
        frame_ts_s=tuple(k / FPS for k in range(n)),
        last=True,
    )
    return Clip(ref, frames)


def check_ok(results: list, what: str) -> list:
    from pipelines.core.errors import StageError

    bad = [r for r in results if isinstance(r, StageError)]
    if bad:
        raise RuntimeError(f"{what}: {len(bad)} item error(s), first: {bad[0]}")
    return results


def fused_inputs(proc, videos, prompt: str, device, dtype) -> dict:
    """The processor's own (fused) inputs for one prompt over ``videos``, as the tests build them."""
    from transformers.video_utils import VideoMetadata

    messages = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": prompt}]}]
    text = proc.apply_chat_template(messages, add_generation_prompt=True)
    proc.tokenizer.padding_side = "left"
    inputs = proc(
        text=[text] * len(videos),
        videos=list(videos),
        return_tensors="pt",
        padding=True,
        do_sample_frames=False,
        video_metadata=[VideoMetadata(total_num_frames=len(v), fps=FPS) for v in videos],
    )
    out = {}
    for k, v in inputs.items():
        if torch.is_tensor(v):
            v = v.to(device)
            if v.is_floating_point():
                v = v.to(dtype)
        out[k] = v
    return out


def fused_generate(model, proc, videos, prompt, max_new_tokens, device, dtype) -> list[list[int]]:
    inputs = fused_inputs(proc, videos, prompt, device, dtype)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    # Where the split path's rows end too (ChatGeneration._generate), so both compare alike.
    stop = stop_ids(model.generation_config, proc.tokenizer.pad_token_id)
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    return [until_stop(r, stop) for r in new]


def equal_fraction(a: list[int], b: list[int]) -> float:
    n = max(len(a), len(b))
    if n == 0:
        return 1.0
    return sum(x == y for x, y in zip(a, b, strict=False)) / n


def split_token_ids(gen_stage, items) -> list[list[int]]:
    """Token ids of the split path, exactly as ``GenerateStage.process_batch`` computes them
    (its Caption only keeps text and counts)."""
    from safetensors.torch import load as load_tensors

    from pipelines.models.base import GenRequest

    requests = [GenRequest(load_tensors(c.encoded), c.ref.prompt) for c in items]
    outs = check_ok(gen_stage.family.generate(requests, gen_stage.generation), "split generate")
    return [list(o.token_ids) for o in outs]


def param_summary(module) -> dict:
    params = list(module.parameters())
    return {
        "count": sum(p.numel() for p in params),
        "devices": sorted({str(p.device) for p in params}),
        "dtypes": sorted({str(p.dtype) for p in params}),
    }


def tb() -> str:
    return traceback.format_exc()[-4000:]


def short(d: dict) -> str:
    skip = {"traceback", "times_s", "split_tokens", "fused_tokens", "fused_batch4_tokens"}
    return json.dumps({k: v for k, v in d.items() if k not in skip}, default=str)[:600]
