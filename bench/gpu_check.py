"""One-shot GPU check of the encoder/LM split: CUDA placement, bf16, split-vs-fused parity
and throughput at Qwen2-VL-2B's real size, with random weights built offline.

Runs the project's stages directly (no Ray, no PyAV): frames are synthesized as uint8 arrays.

    python bench/gpu_check.py --out /tmp/gpu_check.json           # H100: ~2-4 min
    python bench/gpu_check.py --small --out /tmp/gpu_check.json   # CPU smoke test of the code

Every section is wrapped: one failure is recorded in the JSON and the others still run. The
JSON is rewritten after each section, so a killed run still leaves what it measured. Without
CUDA the CUDA-only checks report "skipped: no CUDA"; the realistic-size section runs on CPU
only with --small (tiny dimensions), else it is skipped. Shared helpers live in
``bench/gpu_common.py``, the realistic-size section in ``bench/gpu_realistic.py``, the
decode-loop section (batch 8/32/64 eager vs compiled, as a fraction of the copy bandwidth
bound) in ``bench/gpu_decode.py``. ``--budget-s 540`` leaves the decode loop its time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bench.gpu_common import (  # noqa: E402
    PROMPT,
    T0,
    Peak,
    check_ok,
    equal_fraction,
    free_memory,
    fused_generate,
    gib,
    has_cuda,
    log,
    make_clip,
    param_summary,
    split_token_ids,
    synth_frames,
    tb,
)
from bench.gpu_decode import section_decode  # noqa: E402
from bench.gpu_realistic import section_realistic  # noqa: E402

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

    from pipelines.core.config import GenerationConfig, ModelConfig, PoolConfig
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
        # Issue 17: LM at batch 8/32/64, eager vs compiled, against the copy bandwidth.
        section("lm_decode_loop", lambda: section_decode(args, workdir, deadline))

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
