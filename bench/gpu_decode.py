"""The GPU check's decode-loop section: the LM stage at batch 8/32/64, eager vs compiled
(static KV cache + torch.compile with CUDA graphs), against the bandwidth bound measured
in the same run.

A decode step reads every LM weight once (the embedding table excepted: only the rows of
the batch's tokens), so at batch ``b`` no loop can beat ``b x bandwidth / weight bytes``
tokens/s (the KV cache adds its own reads on top: the bound is optimistic). The copy
bandwidth is a device-to-device ``copy_`` of a 1 GiB buffer (read + write counted).

Reuses the random 2B-sized model ``gpu_realistic`` built (same folder), else builds it.
On CPU (``--small``) it runs the same code with tiny dimensions and a static cache only:
compiling on a CPU takes minutes per shape and says nothing about a GPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.gpu_common import (
    check_ok,
    free_memory,
    has_cuda,
    log,
    make_clip,
    sync,
    synth_frames,
    timed,
)

BATCHES = (8, 32, 64)


def copy_bandwidth(device: torch.device, gib: float = 1.0, repeats: int = 10) -> dict:
    """Device memory bandwidth from a large ``copy_`` (bytes read + bytes written / time)."""
    n = int(gib * 2**30) // 2
    src = torch.empty(n, dtype=torch.bfloat16, device=device)
    dst = torch.empty_like(src)
    med, times, _ = timed(lambda: dst.copy_(src), repeats, warmup=2)
    moved = 2 * src.numel() * src.element_size()
    src = dst = None
    free_memory()
    return {"buffer_gib": gib, "median_s": round(med, 6), "gb_per_s": round(moved / med / 1e9, 1)}


def lm_weight_bytes(lm: torch.nn.Module) -> int:
    """Bytes of LM weights one decode step reads (the input embedding table excluded)."""
    embed = lm.get_input_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in lm.parameters())
    tied = lm.get_output_embeddings() is not None and lm.get_output_embeddings().weight is embed
    return total if tied else total - embed.numel() * embed.element_size()


def section_decode(args, workdir: Path, deadline: float) -> dict:
    from bench.gpu_realistic import build_realistic, realistic_dims
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
    path = workdir / "qwen2vl-2b-dims-random"
    res: dict = {"device": str(device), "dtype": str(dtype)}
    if not (path / "config.json").exists():
        res["build"] = build_realistic(path, dims, device, dtype)
    res["copy_bandwidth"] = copy_bandwidth(device, gib=0.05 if args.small else 1.0)
    bandwidth = res["copy_bandwidth"]["gb_per_s"] * 1e9

    mc = ModelConfig(model=str(path), device="auto", dtype="auto")
    enc = EncodeStage(mc, PoolConfig(batch_size=8))
    enc.setup()
    frames = [
        synth_frames(dims["frames"], dims["height"], dims["width"], seed=200 + i) for i in range(8)
    ]
    clips = [make_clip(i, f) for i, f in enumerate(frames)]
    med, _, encoded8 = timed(lambda: check_ok(enc.process_batch(clips), "encode"), args.repeats)
    res["encoder_batch8_clips_per_s"] = round(8 / med, 2)
    enc = None
    free_memory()

    max_new = dims["max_new_tokens"]
    loops = {"eager": {}, "compiled": {"compile": True}}
    if not has_cuda():
        loops["compiled"] = {"kv_cache": "static"}  # see the module docstring
        res["compiled_note"] = "CPU: static KV cache only, no torch.compile"
    gen = GenerateStage(mc, PoolConfig(batch_size=max(BATCHES)), GenerationConfig())
    gen.setup()
    weights = lm_weight_bytes(gen.family.lm)
    res["lm_weight_gb_read_per_step"] = round(weights / 1e9, 3)
    res["step_s_at_bandwidth"] = round(weights / bandwidth, 6)
    for name, options in loops.items():
        settings = GenerationConfig(max_new_tokens=max_new, **options)
        for b in BATCHES:
            key = f"{name}_batch{b}"
            left = deadline - time.perf_counter()
            if left < (20 if args.small else 60):
                res[key] = {"skipped": f"time budget: {left:.0f}s left"}
                continue
            items = [
                EncodedClip(encoded8[i % 8].ref, encoded8[i % 8].encoded, 0.0) for i in range(b)
            ]
            try:
                t = time.perf_counter()
                first = check_ok(gen(items, settings=settings), "generate")  # compiles
                sync()
                first_s = time.perf_counter() - t
                med, times, caps = timed(
                    lambda items=items, s=settings: check_ok(gen(items, settings=s), "gen"),
                    args.repeats,
                    warmup=0,
                )
            except Exception as exc:  # noqa: BLE001 - recorded, the other runs go on
                res[key] = {"error": f"{type(exc).__name__}: {exc}"}
                log(f"  {key} FAILED: {res[key]['error']}")
                continue
            tokens = sum(c.output_tokens for c in caps)
            bound = b * bandwidth / weights
            res[key] = {
                "first_call_s": round(first_s, 2),
                "median_s": round(med, 4),
                "times_s": times,
                "output_tokens": tokens,
                "output_tokens_per_s": round(tokens / med, 1),
                "bandwidth_bound_tokens_per_s": round(bound, 1),
                "fraction_of_bound": round(tokens / med / bound, 4),
                "same_text_as_first_call": [c.text for c in caps] == [c.text for c in first],
            }
            log(
                f"  {key}: {res[key]['output_tokens_per_s']} tok/s, "
                f"{res[key]['fraction_of_bound']:.1%} of the bandwidth bound"
            )
    eager8 = res.get("eager_batch8", {}).get("output_tokens_per_s")
    if eager8:
        res["vs_issue_baseline_234_tok_s"] = round(eager8 / 234.0, 2)
    for b in BATCHES:
        e, c = res.get(f"eager_batch{b}", {}), res.get(f"compiled_batch{b}", {})
        if "output_tokens_per_s" in e and "output_tokens_per_s" in c:
            res[f"compiled_vs_eager_batch{b}"] = round(
                c["output_tokens_per_s"] / e["output_tokens_per_s"], 2
            )
    gen = None
    free_memory()
    return res
