"""Benchmark: actor start-up of each model half, whole-model-then-drop vs half-only loading.

Run by hand (never in CI):  .venv/bin/python bench/half_load.py [--runs 3]

Builds a random-weight Qwen2-VL of a few hundred million parameters with the family's own
tiny builder (vision tower and LM both substantial, float32 safetensors, ~1.5 GB) and a
bfloat16 copy (hub checkpoints are bfloat16), then, each in a fresh subprocess, times
``load_encoder()`` and ``load_lm()`` on the CPU, in three cases:
- fp32 checkpoint, float32 actor (the CPU default): no dtype conversion;
- bf16 checkpoint, float32 actor: every loaded tensor is converted (a hub checkpoint on CPU);
- bf16 checkpoint, bfloat16 actor (the GPU default, before ``.to(cuda)``): no conversion.
Two ways each:
- **old**: the loading of before ``pipelines.models.halves``, reproduced here: the whole
  model through ``AutoModelForImageTextToText.from_pretrained``, then the other half dropped;
- **new**: ``QwenVL`` as shipped (the other half is never built, so never read).
Each child reports its wall seconds for the load (processor included, imports excluded),
its peak RSS (``VmHWM``) and its RSS once loaded (``VmRSS``), and the same two before the
load (interpreter + torch + transformers). Without a dtype conversion transformers maps the
safetensors file and hands out views of it: pages no one touches are neither read nor
counted in RSS, so the old way's dropped half costs little there; a conversion copies every
loaded tensor. The checkpoints are read once first so that every run finds them in the page
cache. Medians of ``--runs`` runs; the old/new runs alternate.

Writes bench/results/half_load.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "half_load.json"
# Width 1024 on both sides: the LM is ~9.4M parameters a layer, a vision block ~8.4M.
MODEL_OPTIONS = dict(hidden_size=1024, num_layers=20, vision_dim=1024, vision_depth=20)

CHILD = """
import json, sys, time
from transformers import AutoModelForImageTextToText, AutoProcessor
from pipelines.core.config import ModelConfig
from pipelines.models.qwen2_vl import QwenVL


class OldQwenVL(QwenVL):
    '''Qwen2-VL's halves as loaded before: the whole model, then the other half dropped.'''

    def _load_whole(self):
        cfg = self.config
        self.processor = AutoProcessor.from_pretrained(cfg.model, revision=cfg.revision)
        self.video_token = self.processor.video_token
        model = AutoModelForImageTextToText.from_pretrained(
            cfg.model, revision=cfg.revision, dtype=self.dtype
        )
        self.uses_grid_seconds = "second_per_grid_ts" in self.processor.model_input_names
        return model.eval()

    def load_encoder(self):
        model = self._load_whole()
        self.visual_model = model.model
        self.visual_model.language_model = None
        self.visual_model.to(self.device)

    def load_lm(self):
        model = self._load_whole()
        model.model.visual = None
        self.lm = model.to(self.device)
        self.max_positions = model.config.text_config.max_position_embeddings


def status():
    fields = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


way, half, path, dtype = sys.argv[1:5]
config = ModelConfig(model=path, device="cpu", dtype=dtype)
family = (OldQwenVL if way == "old" else QwenVL)(config)
before = status()
start = time.perf_counter()
family.load_encoder() if half == "encoder" else family.load_lm()
seconds = time.perf_counter() - start
module = family.visual_model if half == "encoder" else family.lm
params = sum(p.numel() for p in module.parameters())
after = status()
print("RESULT", json.dumps(dict(
    wall_s=seconds, peak_rss_mib=after["VmHWM"], rss_mib=after["VmRSS"],
    import_peak_rss_mib=before["VmHWM"], import_rss_mib=before["VmRSS"], params=params,
)))
"""


# (name, checkpoint dtype, actor dtype)
CASES = (
    ("fp32 ckpt -> float32", "float32", "float32"),
    ("bf16 ckpt -> float32", "bfloat16", "float32"),
    ("bf16 ckpt -> bfloat16", "bfloat16", "bfloat16"),
)


def build(root: Path) -> dict[str, Path]:
    """The float32 model folder and its bfloat16 copy, built once."""
    sys.path.insert(0, str(ROOT))
    from pipelines.models.qwen2_vl import QwenVL

    fp32, bf16 = root / "float32", root / "bfloat16"
    if not (fp32 / "model.safetensors").exists():
        QwenVL.build_tiny(fp32, **MODEL_OPTIONS)
    if not (bf16 / "model.safetensors").exists():
        to_bfloat16(fp32, bf16)
    return {"float32": fp32, "bfloat16": bf16}


def to_bfloat16(src: Path, dst: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("*.safetensors"))
    weights = {k: v.to(torch.bfloat16) for k, v in load_file(src / "model.safetensors").items()}
    save_file(weights, dst / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((dst / "config.json").read_text())
    config["dtype"] = "bfloat16"
    (dst / "config.json").write_text(json.dumps(config, indent=2))


def describe(path: Path) -> dict:
    """Parameter counts per half, read from the checkpoint header (no tensors loaded)."""
    from safetensors import safe_open

    counts = {"vision": 0, "lm": 0}
    with safe_open(path / "model.safetensors", framework="pt") as f:
        for key in f.keys():
            numel = 1
            for dim in f.get_slice(key).get_shape():
                numel *= dim
            vision = key.startswith(("visual.", "model.visual."))
            counts["vision" if vision else "lm"] += numel
    return {**counts, "total": sum(counts.values())}


def warm_page_cache(path: Path) -> None:
    with open(path / "model.safetensors", "rb") as f:
        while f.read(1 << 24):
            pass


def run_child(way: str, half: str, path: Path, dtype: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, way, half, str(path), dtype],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def medians(runs: list[dict]) -> dict:
    return {k: round(statistics.median(r[k] for r in runs), 2) for k in runs[0]}


def measure(paths: dict[str, Path], runs: int) -> dict:
    """{case: {half: {way: [child results]}}}, old/new alternating within each run."""
    raw = {c: {h: {"old": [], "new": []} for h in ("encoder", "lm")} for c, _, _ in CASES}
    for i in range(runs):
        for case, ckpt, dtype in CASES:
            for half in ("encoder", "lm"):
                for way in ("old", "new") if i % 2 == 0 else ("new", "old"):
                    result = run_child(way, half, paths[ckpt], dtype)
                    raw[case][half][way].append(result)
                    print(f"run {i} {case} {half:7s} {way}: {result}", flush=True)
    return raw


def report(summary: dict) -> None:
    print(f"\n{'case':22s} {'half':8s} {'way':4s} {'wall s':>7s} {'peak RSS MiB':>13s}")
    for case, halves in summary.items():
        for half, ways in halves.items():
            for way, m in ways.items():
                print(f"{case:22s} {half:8s} {way:4s} {m['wall_s']:7.2f} {m['peak_rss_mib']:13.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/vidcap-bench-half-load"))
    args = parser.parse_args()
    paths = build(args.model_dir)
    for path in paths.values():
        warm_page_cache(path)
    raw = measure(paths, args.runs)
    summary = {
        case: {h: {w: medians(rs) for w, rs in ways.items()} for h, ways in halves.items()}
        for case, halves in raw.items()
    }
    report(summary)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "model": {"options": MODEL_OPTIONS, "params": describe(paths["float32"])},
        "runs": args.runs,
        "device": "cpu (2 shared vCPUs), checkpoints in page cache",
        "median": summary,
        "raw": raw,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
