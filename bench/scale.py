"""Benchmark: corpus scale — per-input overhead, driver memory, planning, resume, writer.

Run by hand (never in CI):  .venv/bin/python bench/scale.py [--only NAME ...]

Each job runs as its own `vidcap caption` process (its own local Ray, like a user's run),
so the driver's peak RSS (`VmHWM` of that process) and its wall time are the user's.
Parts, side by side in one run:

- missing-N: a manifest of N rows whose files do not exist (no decode, no model work):
  job wall, rows, error codes, driver peak RSS; N = 2,000 and 20,000.
- rerun-20000: the same command again over the finished output (wall; whether any model
  actor was started, from the Ray Data execution plan the job logs).
- videos-2000: 2,000 one-second videos (one clip each), tiny Qwen2-VL, 1 new token.
- kill-20000: the 20,000-row job SIGKILLed (driver and its Ray) at about 10,000 committed
  rows, then the same command again: every row exactly once, rework from summary.json.
- plan-1000000: planning alone (`plan_inputs`) over a 1,000,000-row CSV: wall and peak RSS.
- keyset-10000000: loading 10,000,000 committed keys from Parquet into a `KeySet` and
  looking up 1,000,000 of them.
- writer: rows/s through `batch_rows` + `ShardWriter.add` on the driver.

Figures go to bench/results/scale.json and, by hand, to bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def vidcap(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    cmd = [sys.executable, str(ROOT / "bench" / "_peak.py"), "-m", "pipelines.cli", *args]
    return subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
        cwd=ROOT,
        **kw,
    )


def run(args: list[str]) -> dict:
    started = time.perf_counter()
    proc = vidcap(args)
    out, _ = proc.communicate()
    wall = time.perf_counter() - started
    peak = [ln for ln in out.splitlines() if ln.startswith("PEAK_RSS_KB ")]
    return {
        "rc": proc.returncode,
        "wall_s": round(wall, 2),
        "driver_peak_rss_mb": round(int(peak[-1].split()[1]) / 1024, 1) if peak else None,
        "model_actors": "EncodeActor" in out or "GenerateActor" in out,
        "tail": out[-1500:] if proc.returncode else "",
    }


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def missing_manifest(work: Path, n: int) -> Path:
    path = work / f"missing-{n}.csv"
    path.write_text("path\n" + "".join(f"/nonexistent/v{i:07d}.mp4\n" for i in range(n)))
    return path


def caption_args(inputs: str, out: Path, model: str, *extra: str) -> list[str]:
    return [
        "caption",
        inputs,
        "--out",
        str(out),
        "--model",
        model,
        "--max-new-tokens",
        "1",
        "--commit-interval-s",
        "5",
        *extra,
    ]


def bench_missing(work: Path, model: str, n: int) -> dict:
    out = work / f"out-missing-{n}"
    res = run(caption_args(str(missing_manifest(work, n)), out, model, "--overwrite"))
    s = summary(out)
    res.update(rows=s["rows"], errors_by_code=s["errors_by_code"], inputs=s["inputs"])
    return res


def bench_rerun(work: Path, model: str, n: int) -> dict:
    out = work / f"out-missing-{n}"
    res = run(caption_args(str(missing_manifest(work, n)), out, model))
    s = summary(out)
    res.update(skipped_done=s["skipped_done"], processed=s["processed"])
    return res


def bench_videos(work: Path, model: str, n: int) -> dict:
    from pipelines.media import synth

    folder = work / f"videos-{n}"
    if not folder.exists():
        folder.mkdir()
        for i in range(n):
            synth.write_video(folder / f"v{i:05d}.mp4", seconds=1.0, fps=4.0, width=64, height=48)
    out = work / f"out-videos-{n}"
    res = run(caption_args(str(folder), out, model, "--overwrite"))
    s = summary(out)
    res.update(rows=s["rows"], clips=s["clips"], stage_busy_s=s["stage_busy_s"])
    return res


def bench_kill(work: Path, model: str, n: int) -> dict:
    import pyarrow.parquet as pq

    out = work / f"out-kill-{n}"
    args = caption_args(str(missing_manifest(work, n)), out, model, "--commit-interval-s", "0")
    args += ["--rows-per-shard", "500"]
    proc = vidcap([*args, "--overwrite"])
    committed = 0
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        shards = list((out / "clips").glob("part-*.parquet")) if (out / "clips").exists() else []
        committed = sum(pq.ParquetFile(p).metadata.num_rows for p in shards)
        if committed >= n // 2:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = committed
    res = run(args)
    rows = pq.read_table(out / "clips", columns=["row_key", "video_key"])
    keys = rows.column("row_key").to_pylist()
    s = summary(out)
    res.update(
        committed_before_kill=before,
        rows=len(keys),
        unique_row_keys=len(set(keys)),
        videos=len(set(rows.column("video_key").to_pylist())),
        rework=s["rework"],
        skipped_done=s["skipped_done"],
    )
    return res


PLAN_SCRIPT = """
import sys, time
from pipelines.offline.inputs import default_asks, plan_inputs
t = time.perf_counter()
plan = plan_inputs([sys.argv[1]], default_asks(["Describe."]))
print("PLAN", plan.num_rows, round(time.perf_counter() - t, 2))
"""


def bench_plan(work: Path, n: int) -> dict:
    manifest = missing_manifest(work, n)
    cmd = [sys.executable, str(ROOT / "bench" / "_peak.py"), "-c", PLAN_SCRIPT, str(manifest)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT).stdout
    (_, rows, wall) = next(ln for ln in out.splitlines() if ln.startswith("PLAN")).split()
    peak = next(ln for ln in out.splitlines() if ln.startswith("PEAK_RSS_KB")).split()[1]
    return {"rows": int(rows), "plan_s": float(wall), "peak_rss_mb": round(int(peak) / 1024, 1)}


def bench_keyset(work: Path, n: int) -> dict:
    import numpy as np
    import pyarrow as pa
    import pyarrow.fs as pafs
    import pyarrow.parquet as pq

    from pipelines.core.keys import KeySet, as_fixed
    from pipelines.core.output import committed_keyset

    folder = work / "keys"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    per = 1_000_000
    for s in range(n // per):
        vals = rng.integers(0, 2**63, per, dtype=np.int64)
        keys = pa.array(np.char.mod("%032x", vals).astype(str))
        pq.write_table(pa.table({"video_key": keys}), folder / f"part-{s:05d}.parquet")
    t = time.perf_counter()
    ks = committed_keyset(pafs.LocalFileSystem(), str(folder))
    load_s = time.perf_counter() - t
    probe = pq.read_table(folder / "part-00003.parquet").column(0)
    t = time.perf_counter()
    hits = int(ks.contains(as_fixed(probe)).sum())
    lookup_s = time.perf_counter() - t
    miss = int(KeySet(as_fixed(probe)).contains(ks.keys[:1000]).sum())
    return {
        "keys": len(ks),
        "load_s": round(load_s, 2),
        "lookup_1m_s": round(lookup_s, 3),
        "hits": hits,
        "bytes": ks.keys.nbytes,
        "cross_check": miss,
    }


def bench_writer(work: Path, n: int) -> dict:
    import pyarrow.fs as pafs

    from pipelines.core.errors import ErrorCode, StageError
    from pipelines.core.output import ShardWriter, batch_rows
    from pipelines.core.records import Ask, ClipRef, error_row
    from pipelines.offline.ray_data import rows_to_batch

    rows = []
    for i in range(n):
        ref = ClipRef(
            f"v{i}", f"/v{i}.mp4", (Ask("Describe."),), -1, 0.0, 0.0, video_key=f"{i:032x}"
        )
        ref = ClipRef(**{**ref.__dict__, "last": True, "video_rows": 1, "attempt": 1})
        row = error_row(ref, StageError(ErrorCode.NOT_FOUND, "gone", "decode"))
        row.pop("frames")
        rows.append(row)
    batches = [rows_to_batch(rows[i : i + 1000]) for i in range(0, n, 1000)]
    writer = ShardWriter(str(work / "out-writer"), pafs.LocalFileSystem(), "m", "s")
    t = time.perf_counter()
    for b in batches:
        writer.add(batch_rows(b, "m", "", "r" * 32))
    s = writer.close(inputs=n)
    wall = time.perf_counter() - t
    return {"rows": n, "committed": s.rows, "rows_per_s": round(n / wall), "wall_s": round(wall, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", nargs="*", default=None)
    parser.add_argument("--work", default=None)
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="vidcap-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    from pipelines.models.tiny import build_tiny_model

    model = work / "tiny-qwen2_vl"
    if not model.exists():
        build_tiny_model("qwen2_vl", model)
    parts = {
        "missing-2000": lambda: bench_missing(work, str(model), 2000),
        "missing-20000": lambda: bench_missing(work, str(model), 20000),
        "rerun-20000": lambda: bench_rerun(work, str(model), 20000),
        "videos-2000": lambda: bench_videos(work, str(model), 2000),
        "kill-20000": lambda: bench_kill(work, str(model), 20000),
        "plan-1000000": lambda: bench_plan(work, 1_000_000),
        "keyset-10000000": lambda: bench_keyset(work, 10_000_000),
        "writer": lambda: bench_writer(work, 100_000),
    }
    results = {}
    for name, fn in parts.items():
        if args.only and name not in args.only:
            continue
        results[name] = fn()
        print(name, json.dumps(results[name]), flush=True)
    dest = ROOT / "bench" / "results" / "scale.json"
    dest.parent.mkdir(exist_ok=True)
    previous = json.loads(dest.read_text()) if dest.exists() else {}
    dest.write_text(json.dumps({**previous, **results}, indent=2))


if __name__ == "__main__":
    main()
