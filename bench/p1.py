"""Benchmark P1: the offline job's wall time against its slowest stage run alone.

Run by hand (never in CI):  .venv/bin/python bench/p1.py --runs 3 [--videos 250]

Goal: the job's wall <= 1.25 x its slowest stage alone, over >= 500 clips.

Workload: ``--videos`` synthetic videos (``pipelines.media.synth.write_video``, moving
pattern) of ``--seconds`` s each, cut into ``--clip-s`` clips of ``--num-frames`` frames;
a random-weight Qwen2-VL built offline, large enough that the LM half dominates, as it
does on a real GPU deployment. Corpus and model are kept under ``--work`` and reused.

Per run, side by side (stages alone first, then the job):

- each stage ALONE, each in its own process (``--child``), over exactly the clips the job
  sees, built from the same ``vidcap caption`` flags (``job_config_from_args`` +
  ``checked_config``), with the same per-call batch size, and the thread count of a Ray
  worker with ``num_cpus=1`` (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``).
  Decode runs single-process (one ``DecodeStage``, no attempt ledger): the job may run up
  to (Ray CPUs - actor CPUs) decode tasks at once, so this is decode's upper bound. Each
  stage's inputs are precomputed (decoded clips for encode, encoder outputs for generate,
  pickled by the previous stage's process of the first run) and loaded before the clock
  starts; model loading (``setup()``) is timed apart and reported, not counted.
- the whole job: ``python -m pipelines.cli caption ...`` as its own process with its own
  local Ray (``HF_HUB_OFFLINE=1``, ``RAY_ADDRESS=""``); wall from process start to exit
  (what a user sees), plus ``wall_s`` and ``stage_busy_s`` of ``OUT/summary.json``. Its
  output (stdout+stderr: Ray Data's progress) is saved with each line stamped by seconds
  since the process started, under ``<work>/<session>/job-<run>.log``.

Reports medians over ``--runs`` and ratio = job wall / max(stage alone), for the process
wall and for summary.json's ``wall_s``; writes bench/results/p1.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PROMPT = "Describe this clip."
STAGES = ("decode", "encode", "generate")
GOAL = 1.25


def child_env() -> dict[str, str]:
    # OMP_NUM_THREADS=1 is what Ray gives a worker with num_cpus=1 (actors and decode tasks).
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": "", "OMP_NUM_THREADS": "1"}


# --- workload -------------------------------------------------------------------------------


def make_corpus(work: Path, args: argparse.Namespace) -> Path:
    from pipelines.media import synth

    name = f"videos-{args.videos}x{args.seconds:g}s-{args.width}x{args.height}-{args.src_fps:g}fps"
    folder = work / name
    done = folder / ".complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    for i in range(args.videos):
        path = folder / f"v{i:05d}.mp4"
        if not path.exists():
            synth.write_video(
                path,
                seconds=args.seconds,
                fps=args.src_fps,
                width=args.width,
                height=args.height,
                pattern="moving",
            )
    done.write_text("")
    print(f"corpus: {args.videos} videos in {time.perf_counter() - t:.1f} s -> {folder}")
    return folder


def make_model(work: Path, args: argparse.Namespace) -> Path:
    from pipelines.models.tiny import build_tiny_model

    sizes = dict(
        hidden_size=args.hidden,
        num_layers=args.layers,
        vision_dim=args.vision_dim,
        vision_depth=args.vision_depth,
    )
    folder = work / ("qwen2_vl-" + "-".join(f"{v}" for v in sizes.values()))
    if not (folder / "config.json").exists():
        build_tiny_model("qwen2_vl", folder, **sizes)
    return folder


def caption_flags(corpus: Path, out: Path, model: Path, args: argparse.Namespace) -> list[str]:
    """The `vidcap caption` flags of the job; the stages alone parse the very same."""
    return [
        "caption",
        str(corpus),
        "--out",
        str(out),
        "--model",
        str(model),
        "--prompt",
        PROMPT,
        "--clip-s",
        f"{args.clip_s:g}",
        "--num-frames",
        str(args.num_frames),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--encoder-batch",
        str(args.encoder_batch),
        "--lm-batch",
        str(args.lm_batch),
        "--overwrite",
    ]


def job_config(flags: list[str]):
    from pipelines.cli import build_parser
    from pipelines.cli.job_flags import job_config_from_args
    from pipelines.offline.job import checked_config

    return checked_config(job_config_from_args(build_parser().parse_args(flags)))


# --- one stage alone (child process) --------------------------------------------------------


def run_child(stage: str, session: Path) -> None:
    """Time one stage alone in this process; print one JSON line prefixed ``P1CHILD``."""
    import torch

    from pipelines.core.errors import StageError
    from pipelines.core.records import Clip
    from pipelines.core.stage import MapStage
    from pipelines.offline.inputs import default_asks, expand_inputs
    from pipelines.stages.decode import DecodeStage
    from pipelines.stages.encode import EncodeStage
    from pipelines.stages.generate import GenerateStage

    config = job_config(json.loads((session / "flags.json").read_text()))
    torch.set_num_threads(1)
    res: dict = {"stage": stage, "threads": torch.get_num_threads()}
    if stage == "decode":
        tasks = expand_inputs(config.inputs, default_asks(config.prompts, config.questions))
        decode = DecodeStage(config.decode, num_cpus=config.decode_cpus, context=config.context)
        t = time.perf_counter()
        outs = [c for task in tasks for c in decode.iter_outputs(task)]
        res["stage_s"] = time.perf_counter() - t
        clips = [c for c in outs if isinstance(c, Clip)]
        res.update(videos=len(tasks), items=len(clips), failed=len(outs) - len(clips))
        dest = session / "clips.pkl"
        if not dest.exists():
            dest.write_bytes(pickle.dumps(clips, protocol=pickle.HIGHEST_PROTOCOL))
    else:
        source = session / ("clips.pkl" if stage == "encode" else "encoded.pkl")
        items = pickle.loads(source.read_bytes())
        model_stage: MapStage
        if stage == "encode":
            model_stage = EncodeStage(config.model, config.encoder)
        else:
            model_stage = GenerateStage(config.model, config.lm, config.generation, config.context)
        t = time.perf_counter()
        model_stage.setup()
        res["load_s"] = time.perf_counter() - t
        size = model_stage.batch_size
        outs = []
        t = time.perf_counter()
        for i in range(0, len(items), size):
            outs += model_stage(items[i : i + size])
        res["stage_s"] = time.perf_counter() - t
        ok = [o for o in outs if not isinstance(o, StageError)]
        res.update(items=len(items), failed=len(outs) - len(ok), batch_size=size)
        if stage == "encode":
            dest = session / "encoded.pkl"
            if not dest.exists():
                dest.write_bytes(pickle.dumps(ok, protocol=pickle.HIGHEST_PROTOCOL))
        else:
            res["output_tokens"] = sum(o.output_tokens for o in ok)
            res["prompt_tokens"] = sum(o.prompt_tokens for o in ok)
    print("P1CHILD " + json.dumps(res), flush=True)


def stage_alone(stage: str, session: Path) -> dict:
    started = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            stage,
            "--session",
            str(session),
        ],
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("P1CHILD ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{stage} alone failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    res = json.loads(lines[-1].split(" ", 1)[1])
    res["process_s"] = time.perf_counter() - started
    return res


# --- the whole job --------------------------------------------------------------------------


def run_job(flags: list[str], log_path: Path) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_ADDRESS": ""}
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
        start_new_session=True,
    )
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(f"{time.perf_counter() - started:8.2f} {line.rstrip()}")

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    rc = proc.wait()
    wall = time.perf_counter() - started
    reader.join(timeout=10)
    log_path.write_text("\n".join(lines) + "\n")
    if rc:
        raise RuntimeError(f"job failed ({rc}), log: {log_path}\n" + "\n".join(lines[-30:]))
    out = Path(flags[flags.index("--out") + 1])
    s = json.loads((out / "summary.json").read_text())
    return {
        "process_wall_s": wall,
        "wall_s": s["wall_s"],
        "stage_busy_s": s["stage_busy_s"],
        "clips": s["clips"],
        "rows": s["rows"],
        "error_rows": s["error_rows"],
        "output_tokens": s["output_tokens"],
        "prompt_tokens": s["prompt_tokens"],
        "log": str(log_path),
        "phases_s": phases(lines),
    }


PROGRESS = re.compile(
    r"logging_progress\.py:\d+ -- (?P<op>[^:]+(?:\([^)]*\))?[^:]*): (?P<done>\d+)/"
)


def phases(lines: list[str]) -> dict:
    """Seconds since the job process started at which the driver printed: Ray's first
    line, the start of the caption dataset, Ray Data's end, the summary; and Ray Data's
    progress (logged every 10 s): (t, clips out of generate, generate actors' state)."""
    out: dict = {"timeline": []}
    t_block = None
    for line in lines:
        stamp, _, text = line.strip().partition(" ")
        t = float(stamp)
        if "ray" in text.lower() and "ray_first_line" not in out:
            out["ray_first_line"] = t
        if "Starting execution of Dataset" in text:
            out["execution_start"] = t
        elif "execution finished in" in text:
            out["execution_end"] = t
            out["execution_reported"] = float(text.split("finished in")[1].split()[0])
        elif text.startswith("inputs ") and "summary_printed" not in out:
            out["summary_printed"] = t
        elif "Total Progress:" in text:
            t_block = t
        elif (m := PROGRESS.search(text)) and "GenerateActor" in m["op"] and "Union" not in m["op"]:
            out["timeline"].append([t_block, int(m["done"])])
        elif t_block is not None and out["timeline"] and "Actors:" in text:
            last = out["timeline"][-1]
            if len(last) == 2 and last[0] == t_block:
                last.append(text.split("Actors:")[1].split(";")[0].strip())
    return out


# --- driver ---------------------------------------------------------------------------------


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--videos", type=int, default=250)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--clip-s", type=float, default=10.0)
    ap.add_argument("--width", type=int, default=160)
    ap.add_argument("--height", type=int, default=120)
    ap.add_argument("--src-fps", type=float, default=8.0, help="frame rate of the synthetic files")
    ap.add_argument("--num-frames", type=int, default=4, help="frames sampled per clip")
    ap.add_argument("--hidden", type=int, default=512, help="LM width")
    ap.add_argument("--layers", type=int, default=6, help="LM layers")
    ap.add_argument("--vision-dim", type=int, default=256)
    ap.add_argument("--vision-depth", type=int, default=6)
    ap.add_argument("--max-new-tokens", type=int, default=40)
    ap.add_argument("--encoder-batch", type=int, default=8)
    ap.add_argument("--lm-batch", type=int, default=8)
    ap.add_argument("--work", default="/tmp/vidcap-p1", help="corpus and model, reused")
    ap.add_argument("--no-write", action="store_true", help="do not write bench/results/p1.json")
    ap.add_argument("--child", choices=STAGES, help=argparse.SUPPRESS)
    ap.add_argument("--session", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        run_child(args.child, Path(args.session))
        return

    load_before = load()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    corpus = make_corpus(work, args)
    model = make_model(work, args)
    session = work / f"session-{time.strftime('%Y%m%d-%H%M%S')}"
    session.mkdir()
    out = session / "out"
    flags = caption_flags(corpus, out, model, args)
    (session / "flags.json").write_text(json.dumps(flags))
    print("job: .venv/bin/python -m pipelines.cli " + " ".join(flags), flush=True)

    alone: dict[str, list[dict]] = {s: [] for s in STAGES}
    jobs: list[dict] = []
    for run in range(args.runs):
        for stage in STAGES:
            alone[stage].append(stage_alone(stage, session))
        jobs.append(run_job(flags, session / f"job-{run}.log"))
        a, j = {s: alone[s][-1] for s in STAGES}, jobs[-1]
        print(
            f"run {run}: clips={a['decode']['items']}/{j['clips']} "
            + " ".join(f"{s}={a[s]['stage_s']:.1f}s" for s in STAGES)
            + f" | job process={j['process_wall_s']:.1f}s summary={j['wall_s']:.1f}s "
            f"busy={j['stage_busy_s']} load={load()}",
            flush=True,
        )
    load_after = load()

    def med(values: list[float]) -> float:
        return round(statistics.median(values), 2)

    stage_s = {s: med([r["stage_s"] for r in alone[s]]) for s in STAGES}
    load_s = {s: med([r["load_s"] for r in alone[s]]) for s in ("encode", "generate")}
    slowest = max(stage_s, key=stage_s.get)
    process = med([j["process_wall_s"] for j in jobs])
    summary_wall = med([j["wall_s"] for j in jobs])
    busy = {s: med([j["stage_busy_s"].get(s, 0.0) for j in jobs]) for s in STAGES}
    per_run_max = [max(alone[s][r]["stage_s"] for s in STAGES) for r in range(args.runs)]
    ratio_process = round(process / stage_s[slowest], 3)
    ratio_summary = round(summary_wall / stage_s[slowest], 3)
    clips = jobs[-1]["clips"]

    def split(j: dict) -> dict[str, float]:
        p = j["phases_s"]
        first = next((t for t, done, *_ in p["timeline"] if done), None)
        return {
            "before_execution": p["execution_start"],
            "execution": p["execution_end"] - p["execution_start"],
            "after_execution": j["process_wall_s"] - p["execution_end"],
            "first_lm_rows_seen_by": (first - p["execution_start"]) if first else None,
        }

    splits = [split(j) for j in jobs]
    job_phases = {
        k: med([s[k] for s in splits if s[k] is not None]) if any(s[k] for s in splits) else None
        for k in splits[0]
    }
    result = {
        "goal": f"job wall <= {GOAL} x slowest stage alone, >= 500 clips",
        "command": ".venv/bin/python bench/p1.py " + " ".join(sys.argv[1:]),
        "job_command": ".venv/bin/python -m pipelines.cli " + " ".join(flags),
        "workload": {
            "videos": args.videos,
            "clips": clips,
            "alone_clips": alone["decode"][-1]["items"],
            "video": f"{args.seconds:g} s, {args.width}x{args.height}, {args.src_fps:g} fps, "
            "synth moving pattern",
            "clip_s": args.clip_s,
            "num_frames": args.num_frames,
            "model": f"random-weight qwen2_vl: LM {args.layers} layers x {args.hidden}, "
            f"vision {args.vision_depth} layers x {args.vision_dim}",
            "max_new_tokens": args.max_new_tokens,
            "encoder_batch": args.encoder_batch,
            "lm_batch": args.lm_batch,
            "output_tokens": {
                "job": jobs[-1]["output_tokens"],
                "generate_alone": alone["generate"][-1]["output_tokens"],
            },
        },
        "machine": {
            "cpu_count": os.cpu_count(),
            "load_before": load_before,
            "load_after": load_after,
        },
        "runs": args.runs,
        "median_stage_alone_s": stage_s,
        "median_model_load_s": load_s,
        "slowest_stage": slowest,
        "median_job_process_wall_s": process,
        "median_job_summary_wall_s": summary_wall,
        "median_job_stage_busy_s": busy,
        "median_job_phases_s": job_phases,
        "ratio_process_wall": ratio_process,
        "ratio_summary_wall": ratio_summary,
        "goal_met_process_wall": ratio_process <= GOAL,
        "goal_met_summary_wall": ratio_summary <= GOAL,
        "per_run": {
            "stage_alone_s": {s: [round(r["stage_s"], 2) for r in alone[s]] for s in STAGES},
            "model_load_s": {
                s: [round(r["load_s"], 2) for r in alone[s]] for s in ("encode", "generate")
            },
            "job_process_wall_s": [round(j["process_wall_s"], 2) for j in jobs],
            "job_summary_wall_s": [j["wall_s"] for j in jobs],
            "job_stage_busy_s": [j["stage_busy_s"] for j in jobs],
            "job_phases_s": [j["phases_s"] for j in jobs],
            "ratio_process_wall": [
                round(j["process_wall_s"] / m, 3) for j, m in zip(jobs, per_run_max, strict=True)
            ],
            "ratio_summary_wall": [
                round(j["wall_s"] / m, 3) for j, m in zip(jobs, per_run_max, strict=True)
            ],
        },
        "logs": [j["log"] for j in jobs],
    }
    width = 34
    print()
    print(f"{'P1':<{width}} {'median s':>9}")
    for s in STAGES:
        extra = f"   (model load {load_s[s]:.1f} s, not counted)" if s in load_s else ""
        mark = " <- slowest" if s == slowest else ""
        print(f"{s + ' alone':<{width}} {stage_s[s]:>9.1f}{mark}{extra}")
    print(f"{'job: process wall':<{width}} {process:>9.1f}   ratio {ratio_process:.2f}")
    print(f"{'job: summary.json wall_s':<{width}} {summary_wall:>9.1f}   ratio {ratio_summary:.2f}")
    print(f"{'job: stage busy (summary.json)':<{width}} {busy}")
    print(f"{'job: phases (driver log)':<{width}} {job_phases}")
    print(f"clips {clips}, goal ratio <= {GOAL}, load {load_before} -> {load_after}")
    if not args.no_write:
        dest = ROOT / "bench" / "results" / "p1.json"
        dest.parent.mkdir(exist_ok=True)
        dest.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {dest}")


if __name__ == "__main__":
    main()
