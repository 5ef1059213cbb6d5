"""The GPU check's throughput section at Qwen2-VL-2B's real size, random weights, built from
the tiny Qwen2-VL's helpers (``pipelines.models.qwen2_vl``: tokenizer, config, processor)."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from bench.gpu_common import (
    FPS,
    PROMPT,
    PROMPTS4,
    REAL_VOCAB,
    Peak,
    check_ok,
    free_memory,
    fused_generate,
    gib,
    has_cuda,
    log,
    make_clip,
    param_summary,
    short,
    sync,
    synth_frames,
    tb,
    timed,
    with_prompt,
)

# Keys of the dims below that are the LM's config keys, verbatim.
LM_DIMS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
LM_DIMS += ("num_key_value_heads",)


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
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration, Qwen2VLProcessor

    from pipelines.models.qwen2_vl import (
        QWEN_SPECIAL_TOKENS,
        qwen_tokenizer,
        qwen_vl_config,
        qwen_vl_processor,
    )
    from pipelines.models.tiny import token_ids

    tokenizer = qwen_tokenizer()
    ids = token_ids(tokenizer, QWEN_SPECIAL_TOKENS)
    n_tok = len(tokenizer)
    vocab = REAL_VOCAB if dims["real_vocab"] else n_tok
    text = dict(
        vocab_size=vocab,
        **{k: dims[k] for k in LM_DIMS},
        hidden_act="silu",
        max_position_embeddings=32768,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 1000000.0,
            "mrope_section": dims["mrope_section"],
        },
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
    # Untied so the lm_head rows below can be zeroed without touching the embeddings.
    config = qwen_vl_config(Qwen2VLConfig, tokenizer, text, vision, tie_word_embeddings=False)
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
    processor = qwen_vl_processor(
        Qwen2VLProcessor,
        tokenizer,
        image_pixels=dict(min_pixels=3136, max_pixels=12845056),
        video_pixels=dict(min_pixels=dims["video_min_pixels"], max_pixels=dims["video_max_pixels"]),
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

    from pipelines.core.config import GenerationConfig, ModelConfig, PoolConfig
    from pipelines.core.records import EncodedClip
    from pipelines.models.base import pick_device, pick_dtype
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
