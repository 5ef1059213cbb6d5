"""One-shot GPU check of the encoder/LM split: CUDA placement, bf16, split-vs-fused parity
and throughput at Qwen2-VL-2B's real size, with random weights built offline.

Runs the project's stages directly (no Ray, no PyAV): frames are synthesized as uint8 arrays.

    python bench/gpu_check.py --out /tmp/gpu_check.json           # H100: ~2-4 min
    python bench/gpu_check.py --small --out /tmp/gpu_check.json   # CPU smoke test of the code

Every section is wrapped: one failure is recorded in the JSON and the others still run. The
JSON is rewritten after each section, so a killed run still leaves what it measured. Without
CUDA the CUDA-only checks report "skipped: no CUDA"; the realistic-size section runs on CPU
only with --small (tiny dimensions), else it is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

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
    from pipelines.records import Ask

    return ref.for_ask(Ask(prompt, index=index))


def make_clip(i: int, frames: np.ndarray, prompt: str = PROMPT):
    from pipelines.records import Ask, Clip, ClipRef

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
    from pipelines.errors import StageError

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


def cut_at_stop(row: list[int], stop: set[int]) -> list[int]:
    for i, t in enumerate(row):
        if t in stop:
            return row[:i]
    return row


def fused_generate(model, proc, videos, prompt, max_new_tokens, device, dtype) -> list[list[int]]:
    inputs = fused_inputs(proc, videos, prompt, device, dtype)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    eos = model.generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [] if eos is None else [eos]
    stop = {proc.tokenizer.pad_token_id, *eos}
    new = out[:, inputs["input_ids"].shape[1] :].tolist()
    return [cut_at_stop(r, stop) for r in new]


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


# --------------------------------------------------------------------------------------
# 1. Environment


def section_env(args) -> dict:
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__,
        "transformers_path": str(Path(transformers.__file__).parent),
        "cuda_available": torch.cuda.is_available(),
        "small": args.small,
    }
    for name in ("tokenizers", "safetensors", "huggingface_hub", "pydantic", "numpy"):
        try:
            info[name] = __import__(name).__version__
        except Exception as exc:  # noqa: BLE001
            info[name] = f"missing: {exc}"
    if has_cuda():
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu_name=torch.cuda.get_device_name(0),
            gpu_count=torch.cuda.device_count(),
            gpu_capability=list(torch.cuda.get_device_capability(0)),
            gpu_total_gib=gib(props.total_memory),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    log(
        f"torch {info['torch']} (cuda {info['torch_cuda']}), transformers {info['transformers']}, "
        f"cuda_available={info['cuda_available']}, gpu={info.get('gpu_name')}"
    )
    return info


# --------------------------------------------------------------------------------------
# 2. CUDA placement, bf16, split vs fused on the tiny model


def section_tiny(args, workdir: Path) -> dict:
    from safetensors.torch import load as load_tensors
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pipelines.config import GenerationConfig, ModelConfig, PoolConfig
    from pipelines.models.tiny import build_tiny_model
    from pipelines.stages.encode import EncodeStage
    from pipelines.stages.generate import GenerateStage

    res: dict = {"model": "tiny qwen2_vl (random weights, pipelines.models.tiny)"}
    path = str(build_tiny_model("qwen2_vl", workdir / "tiny-qwen2_vl"))
    mc = ModelConfig(model=path, device="auto", dtype="auto")
    max_new = 12
    enc = EncodeStage(mc, PoolConfig(batch_size=4))
    gen = GenerateStage(mc, PoolConfig(batch_size=4), GenerationConfig(max_new_tokens=max_new))
    enc.setup()
    gen.setup()
    fe, fg = enc.family, gen.family
    clips = [make_clip(i, synth_frames(4, 112, 112, seed=i)) for i in range(4)]
    encoded = check_ok(enc.process_batch(clips), "tiny encode")
    tensors = load_tensors(encoded[0].encoded)
    placement = {
        "encode_family": {"device": str(fe.device), "dtype": str(fe.dtype)},
        "generate_family": {"device": str(fg.device), "dtype": str(fg.dtype)},
        "encode_params": param_summary(fe.visual_model),
        "generate_params": param_summary(fg.lm),
        "encoded_tensors": {k: [str(v.dtype), list(v.shape)] for k, v in tensors.items()},
        "encoded_bytes_per_clip": len(encoded[0].encoded),
    }
    res["placement"] = placement
    if has_cuda():
        bf16 = torch.bfloat16
        checks = {
            "family_device_is_cuda": fe.device.type == "cuda" and fg.device.type == "cuda",
            "family_dtype_is_bf16": fe.dtype == bf16 and fg.dtype == bf16,
            "params_on_cuda": all(
                d.startswith("cuda")
                for s in ("encode_params", "generate_params")
                for d in placement[s]["devices"]
            ),
            "params_bf16": all(
                placement[s]["dtypes"] == ["torch.bfloat16"]
                for s in ("encode_params", "generate_params")
            ),
            "encoded_embeds_bf16": tensors["video_embeds"].dtype == bf16,
        }
        checks["all_ok"] = all(checks.values())
        res["cuda_checks"] = checks
        log(f"tiny placement checks: {checks}")
    else:
        res["cuda_checks"] = "skipped: no CUDA"
        log(f"tiny placement: skipped: no CUDA (ran on {fe.device} {fe.dtype})")

    # Split vs fused: the fused reference is the whole model, same dtype and device.
    proc = AutoProcessor.from_pretrained(path)
    fused = AutoModelForImageTextToText.from_pretrained(path, dtype=fg.dtype).to(fg.device).eval()
    videos = [c.frames for c in clips]
    # Batch 1.
    [split1] = split_token_ids(gen, encoded[:1])
    [ref1] = fused_generate(fused, proc, videos[:1], PROMPT, max_new, fg.device, fg.dtype)
    [cap1] = check_ok(gen.process_batch(encoded[:1]), "tiny generate")
    b1 = {
        "tokens_equal": split1 == ref1,
        "equal_fraction": round(equal_fraction(split1, ref1), 4),
        "split_tokens": split1,
        "fused_tokens": ref1,
        "stage_caption_matches_split_tokens": cap1.output_tokens == len(split1)
        and cap1.text == fg.tokenizer.decode(split1, skip_special_tokens=True),
    }
    # Batch 4: split batched vs fused batched, and vs fused one clip at a time.
    split4 = split_token_ids(gen, encoded)
    ref4 = fused_generate(fused, proc, videos, PROMPT, max_new, fg.device, fg.dtype)
    ref4_single = [
        fused_generate(fused, proc, [v], PROMPT, max_new, fg.device, fg.dtype)[0] for v in videos
    ]
    fr = [equal_fraction(a, b) for a, b in zip(split4, ref4, strict=True)]
    fr1 = [equal_fraction(a, b) for a, b in zip(split4, ref4_single, strict=True)]
    b4 = {
        "tokens_equal_vs_fused_batch4": split4 == ref4,
        "equal_fraction_vs_fused_batch4": round(sum(fr) / len(fr), 4),
        "tokens_equal_vs_fused_one_by_one": split4 == ref4_single,
        "equal_fraction_vs_fused_one_by_one": round(sum(fr1) / len(fr1), 4),
        "distinct_outputs": len({tuple(t) for t in split4}),
        "split_tokens": split4,
        "fused_batch4_tokens": ref4,
    }
    res["parity"] = {
        "device": str(fg.device),
        "dtype": str(fg.dtype),
        "max_new_tokens": max_new,
        "batch1": b1,
        "batch4": b4,
    }
    log(
        f"tiny parity on {fg.device}/{fg.dtype}: b1 equal={b1['tokens_equal']}; "
        f"b4 equal fraction vs fused b4={b4['equal_fraction_vs_fused_batch4']}, "
        f"vs fused one-by-one={b4['equal_fraction_vs_fused_one_by_one']}"
    )
    del enc, gen, fe, fg, fused
    free_memory()
    return res


# --------------------------------------------------------------------------------------
# 3. Throughput at Qwen2-VL-2B size, random weights


def realistic_dims(small: bool) -> dict:
    if small:
        return dict(
            hidden_size=128,
            intermediate_size=256,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            mrope_section=[4, 6, 6],
            vision_embed_dim=64,
            vision_depth=2,
            vision_heads=4,
            frames=4,
            height=84,
            width=112,
            max_new_tokens=8,
            video_min_pixels=28 * 28 * 4,
            video_max_pixels=28 * 28 * 768,
            real_vocab=False,
            fused_clips=2,
        )
    # Qwen2-VL-2B-Instruct's config.json; video pixel budget of its video processor
    # (128..768 merged 28x28 patches per frame), so a 448x336 frame keeps its size.
    return dict(
        hidden_size=1536,
        intermediate_size=8960,
        num_hidden_layers=28,
        num_attention_heads=12,
        num_key_value_heads=2,
        mrope_section=[16, 24, 24],
        vision_embed_dim=1280,
        vision_depth=32,
        vision_heads=16,
        frames=16,
        height=336,
        width=448,
        max_new_tokens=64,
        video_min_pixels=128 * 28 * 28,
        video_max_pixels=768 * 28 * 28,
        real_vocab=True,
        fused_clips=4,
    )


def build_realistic(out: Path, dims: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """A Qwen2-VL with 2B's dimensions and random weights, built on ``device`` and saved."""
    from transformers import (
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    from pipelines.models.tiny import QWEN_CHAT_TEMPLATE, QWEN_SPECIAL_TOKENS, build_tokenizer

    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    n_tok = len(tokenizer)
    vocab = REAL_VOCAB if dims["real_vocab"] else n_tok
    text = dict(
        vocab_size=vocab,
        hidden_size=dims["hidden_size"],
        intermediate_size=dims["intermediate_size"],
        num_hidden_layers=dims["num_hidden_layers"],
        num_attention_heads=dims["num_attention_heads"],
        num_key_value_heads=dims["num_key_value_heads"],
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": dims["mrope_section"],
        },
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=dims["vision_depth"],
        embed_dim=dims["vision_embed_dim"],
        hidden_size=dims["hidden_size"],
        hidden_act="quick_gelu",
        mlp_ratio=4,
        num_heads=dims["vision_heads"],
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        # Untied so the lm_head rows below can be zeroed without touching the embeddings.
        tie_word_embeddings=False,
    )
    t = time.perf_counter()
    torch.manual_seed(0)
    built_on = f"{device} {dtype}"
    try:
        with torch.device(device):
            model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    except Exception as exc:  # noqa: BLE001
        if device.type == "cpu":
            raise
        # Slower, but still a checkpoint: random init on the CPU, in the target dtype.
        log(f"  building on {device} failed ({type(exc).__name__}: {exc}); building on cpu")
        built_on = f"cpu {dtype} (on {device} failed: {type(exc).__name__}: {exc})"
        free_memory()
        model = Qwen2VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.eval()
    # Random weights would sometimes emit EOS/pad early. Zero lm_head rows give logit 0, below
    # the max of ~600 random logits, so special tokens (and, with the real vocabulary, ids the
    # tiny tokenizer lacks) are never chosen: every clip decodes exactly max_new_tokens.
    with torch.no_grad():
        w = model.lm_head.weight
        w[n_tok:] = 0
        w[list(ids.values())] = 0
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    sync()
    build_s = time.perf_counter() - t
    processor = Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(min_pixels=3136, max_pixels=12845056),
        video_processor=Qwen2VLVideoProcessor(
            min_pixels=dims["video_min_pixels"], max_pixels=dims["video_max_pixels"]
        ),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    t = time.perf_counter()
    model.save_pretrained(out)
    processor.save_pretrained(out)
    save_s = time.perf_counter() - t
    info = {
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_vision": sum(p.numel() for p in model.model.visual.parameters()),
        "params_language_model": sum(p.numel() for p in model.model.language_model.parameters()),
        "built_on": built_on,
        "build_s": round(build_s, 2),
        "save_s": round(save_s, 2),
        "saved_gib": gib(sum(f.stat().st_size for f in out.glob("*.safetensors"))),
        "vocab_size": vocab,
        "tokenizer_size": n_tok,
        "vocab_note": (
            f"embedding/lm_head have {vocab} rows ("
            + ("Qwen2-VL-2B's real vocabulary" if vocab == REAL_VOCAB else "small, --small")
            + f") but the tiny tokenizer only has {n_tok} ids; lm_head untied (real 2B ties "
            "it) and the rows of special ids and ids >= tokenizer size are zeroed, so random "
            "weights never stop early"
        ),
    }
    del model
    free_memory()
    return info


def section_realistic(args, workdir: Path, deadline: float) -> dict:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from pipelines.config import GenerationConfig, ModelConfig, PoolConfig
    from pipelines.models.base import pick_device, pick_dtype
    from pipelines.records import EncodedClip
    from pipelines.stages.encode import EncodeStage
    from pipelines.stages.generate import GenerateStage

    if not has_cuda() and not args.small:
        return {"skipped": "skipped: no CUDA (use --small for a CPU smoke run)"}
    dims = realistic_dims(args.small)
    device = pick_device("auto")
    dtype = pick_dtype("auto", device)
    res: dict = {"dims": dims, "device": str(device), "dtype": str(dtype), "repeats": args.repeats}
    n_frames, h, w, max_new = dims["frames"], dims["height"], dims["width"], dims["max_new_tokens"]
    res["frames_per_clip"] = f"{n_frames} x {w}x{h} (WxH) at {FPS} fps"

    def sub(name, fn, min_left_s=0.0):
        """Run one measurement; errors and the time budget are recorded, not raised."""
        left = deadline - time.perf_counter()
        if left < min_left_s:
            res[name] = {"skipped": f"time budget: {left:.0f}s left, needs ~{min_left_s:.0f}s"}
            log(f"  {name}: {res[name]['skipped']}")
            return None
        log(f"  {name} ...")
        t = time.perf_counter()
        try:
            with Peak() as peak:
                out = fn()
            res[name] = {**(out or {}), "peak_memory": peak.result}
        except Exception as exc:  # noqa: BLE001
            res[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": tb()}
            log(f"  {name} FAILED: {type(exc).__name__}: {exc}")
        res[name]["section_s"] = round(time.perf_counter() - t, 2)
        log(f"  {name}: {short(res[name])}")
        return res[name]

    path = workdir / "qwen2vl-2b-dims-random"
    built = sub("build", lambda: build_realistic(path, dims, device, dtype))
    if built is None or "error" in built:
        return res

    mc = ModelConfig(model=str(path), device="auto", dtype="auto")
    gen_cfg = GenerationConfig(max_new_tokens=max_new)
    stages: dict = {}

    def load():
        t = time.perf_counter()
        stages["enc"] = EncodeStage(mc, PoolConfig(batch_size=8))
        stages["enc"].setup()
        enc_s = time.perf_counter() - t
        t = time.perf_counter()
        stages["gen"] = GenerateStage(mc, PoolConfig(batch_size=8), gen_cfg)
        stages["gen"].setup()
        gen_s = time.perf_counter() - t
        return {
            "encode_setup_s": round(enc_s, 2),
            "generate_setup_s": round(gen_s, 2),
            "encode_params": param_summary(stages["enc"].family.visual_model),
            "generate_params": param_summary(stages["gen"].family.lm),
        }

    loaded = sub("load_stages", load)
    if loaded is None or "error" in loaded:
        return res
    clips = [make_clip(i, synth_frames(n_frames, h, w, seed=100 + i)) for i in range(8)]
    encoded8: list = []

    def encode_tp():
        out = {}
        for b in (1, 8):
            med, times, items = timed(
                lambda b=b: check_ok(stages["enc"].process_batch(clips[:b]), "encode"), args.repeats
            )
            out[f"batch{b}"] = {
                "median_s": round(med, 4),
                "times_s": times,
                "clips_per_s": round(b / med, 3),
            }
            if b == 8:
                encoded8.extend(items)
        # The stage's CPU share: the video processor alone on the batch of 8.
        vp = stages["enc"].family.processor.video_processor
        videos = [c.frames for c in clips]
        med, times, _ = timed(
            lambda: vp(videos=videos, return_tensors="pt", do_sample_frames=False), args.repeats
        )
        out["batch8_video_processor_only"] = {"median_s": round(med, 4), "times_s": times}
        from safetensors.torch import load as load_tensors

        t0 = load_tensors(encoded8[0].encoded)
        out["video_grid_thw"] = t0["video_grid_thw"].tolist()
        out["visual_tokens_per_clip"] = int(t0["video_embeds"].shape[0])
        out["encoded_dtype"] = str(t0["video_embeds"].dtype)
        out["encoded_mb_per_clip"] = round(len(encoded8[0].encoded) / 1e6, 3)
        return out

    sub("encode_throughput", encode_tp)
    if not encoded8:
        encoded8 = check_ok(stages["enc"].process_batch(clips), "encode")

    def generate_tp():
        out = {}
        for b in (1, 8):
            med, times, caps = timed(
                lambda b=b: check_ok(stages["gen"].process_batch(encoded8[:b]), "generate"),
                args.repeats,
            )
            n_out = sum(c.output_tokens for c in caps)
            out[f"batch{b}"] = {
                "median_s": round(med, 4),
                "times_s": times,
                "output_tokens": n_out,
                "output_tokens_per_s": round(n_out / med, 1),
                "prompt_tokens_per_clip": caps[0].prompt_tokens,
                "clips_per_s": round(b / med, 3),
                "all_clips_reached_max_new_tokens": all(c.output_tokens == max_new for c in caps),
            }
        return out

    gen_res = sub("generate_throughput", generate_tp)

    enc_res = res.get("encode_throughput", {})
    if "batch8" in enc_res and gen_res and "batch8" in gen_res:
        t8 = enc_res["batch8"]["median_s"] + gen_res["batch8"]["median_s"]
        t1 = enc_res["batch1"]["median_s"] + gen_res["batch1"]["median_s"]
        res["split_end_to_end"] = {
            "note": "encode + generate medians added (one process, no overlap between stages)",
            "batch1_clips_per_s": round(1 / t1, 3),
            "batch8_clips_per_s": round(8 / t8, 3),
        }

    def prompts():
        clip = clips[0]

        def shared():
            [ec] = check_ok(stages["enc"].process_batch([clip]), "encode")
            items = [
                EncodedClip(with_prompt(ec.ref, p, i), ec.encoded, ec.encode_s)
                for i, p in enumerate(PROMPTS4)
            ]
            return check_ok(stages["gen"].process_batch(items), "generate")

        def separate():
            caps = []
            for i, p in enumerate(PROMPTS4):
                c = dataclasses.replace(clip, ref=with_prompt(clip.ref, p, i))
                caps += check_ok(
                    stages["gen"].process_batch(stages["enc"].process_batch([c])), "generate"
                )
            return caps

        med_1, times_1, cap_1 = timed(
            lambda: check_ok(
                stages["gen"].process_batch(stages["enc"].process_batch([clip])), "generate"
            ),
            args.repeats,
            warmup=0,
        )
        med_a, times_a, caps_a = timed(shared, args.repeats, warmup=0)
        med_b, times_b, caps_b = timed(separate, args.repeats, warmup=0)
        same = [a.text == b.text for a, b in zip(caps_a, caps_b, strict=True)]
        return {
            "one_prompt_encode_plus_generate_s": round(med_1, 4),
            "four_prompts_encode_once_generate_batch4_s": round(med_a, 4),
            "four_prompts_4x_encode_plus_generate_s": round(med_b, 4),
            "speedup_shared_vs_4x": round(med_b / med_a, 3),
            "times_s": {"one": times_1, "shared": times_a, "separate": times_b},
            "text_equal_shared_vs_separate": f"{sum(same)}/{len(same)}",
            "output_tokens_shared": [c.output_tokens for c in caps_a],
        }

    sub("prompts_1_vs_4", prompts, min_left_s=0 if args.small else 45)

    # Naive fused loop: the full model, processor + generate one clip at a time.
    stages.clear()
    free_memory()
    k = dims["fused_clips"]

    def fused():
        proc = AutoProcessor.from_pretrained(str(path))
        t = time.perf_counter()
        model = AutoModelForImageTextToText.from_pretrained(str(path), dtype=dtype)
        model = model.to(device).eval()
        load_s = time.perf_counter() - t
        lens = []

        def loop(n):
            for c in clips[:n]:
                toks = fused_generate(model, proc, [c.frames], PROMPT, max_new, device, dtype)
                lens.append(len(toks[0]))

        loop(1)  # warm-up
        lens.clear()
        med, times, _ = timed(lambda: loop(k), args.repeats, warmup=0)
        return {
            "load_s": round(load_s, 2),
            "clips_per_repeat": k,
            "median_s": round(med, 4),
            "times_s": times,
            "clips_per_s": round(k / med, 3),
            "output_tokens_per_clip": sorted(set(lens)),
        }

    sub("fused_naive_loop", fused, min_left_s=0 if args.small else 50)
    free_memory()
    split = res.get("split_end_to_end", {})
    fz = res.get("fused_naive_loop", {})
    if "clips_per_s" in fz and split:
        res["split_batch8_vs_fused_speedup"] = round(
            split["batch8_clips_per_s"] / fz["clips_per_s"], 3
        )
    return res


# --------------------------------------------------------------------------------------


def tb() -> str:
    return traceback.format_exc()[-4000:]


def short(d: dict) -> str:
    skip = {"traceback", "times_s", "split_tokens", "fused_tokens", "fused_batch4_tokens"}
    return json.dumps({k: v for k, v in d.items() if k not in skip}, default=str)[:600]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="gpu_check.json", help="where to write the JSON result")
    ap.add_argument("--small", action="store_true", help="tiny dimensions: a CPU smoke run")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median reported)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=330.0,
        help="skip remaining measurements once this many seconds have passed",
    )
    args = ap.parse_args(argv)
    deadline = T0 + args.budget_s
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except Exception:  # noqa: BLE001
        pass

    results: dict = {"script": "bench/gpu_check.py", "argv": sys.argv[1:]}

    def write():
        results["elapsed_s"] = round(time.perf_counter() - T0, 1)
        results["imported"] = {m: m in sys.modules for m in ("ray", "av", "pydantic")}
        out_path.write_text(json.dumps(results, indent=2, default=str) + "\n")

    def section(name, fn):
        log(f"== {name}")
        t = time.perf_counter()
        try:
            with Peak() as peak:
                results[name] = fn()
            results[name]["peak_memory"] = peak.result
        except Exception as exc:  # noqa: BLE001
            results[name] = {"error": f"{type(exc).__name__}: {exc}", "traceback": tb()}
            log(f"{name} FAILED: {type(exc).__name__}: {exc}")
        results[name]["section_s"] = round(time.perf_counter() - t, 2)
        free_memory()
        write()

    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        workdir = Path(tmp)
        section("environment", lambda: section_env(args))
        section("tiny_cuda_bf16_parity", lambda: section_tiny(args, workdir))
        section("realistic_qwen2vl_2b", lambda: section_realistic(args, workdir, deadline))

    def errors(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                if "error" in v:
                    yield f"{prefix}{k}"
                yield from errors(v, f"{prefix}{k}.")

    results["errors"] = list(errors(results))
    results["no_ray_no_av"] = not (results["imported"]["ray"] or results["imported"]["av"])
    write()
    print(json.dumps(results, indent=2, default=str), flush=True)
    log(f"wrote {out_path}; errors: {results['errors'] or 'none'}")
    return 1 if results["errors"] or not results["no_ray_no_av"] else 0


if __name__ == "__main__":
    sys.exit(main())
