"""Load benchmark of the endpoint: closed-loop clients at 1x and 3x capacity.

Run by hand (never in CI):  .venv/bin/python bench/serve_load.py --seconds 30

Starts a local Ray + Serve on loopback with a tiny random-weight Qwen2-VL (hidden size
--hidden), sized so that capacity is known: the LM deployment takes --capacity requests at
once and queues at most --queue more; everything beyond is refused with 503. Then runs
`capacity` and `3 x capacity` concurrent clients for --seconds each, every client sending
chat completions with a short video as a data URL, and reports per phase: requests/s,
p50/p99 latency of admitted requests, and the status-code mix. Writes
bench/results/serve_load.json.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import requests  # noqa: E402

from pipelines.media import synth  # noqa: E402
from pipelines.models.tiny import build_tiny_model  # noqa: E402


def run_phase(url: str, body: dict, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    codes: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        session = requests.Session()
        while time.monotonic() < stop:
            t = time.perf_counter()
            try:
                r = session.post(url, json=body, timeout=120)
                code = r.status_code
            except requests.RequestException:
                code = -1
            dt = time.perf_counter() - t
            with lock:
                codes[code] += 1
                if code == 200:
                    latencies.append(dt)
            if code == 503:
                time.sleep(0.05)  # a polite client backs off briefly on 503

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - started
    lat = sorted(latencies)
    p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))] if lat else None
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "admitted_per_s": round(len(lat) / wall, 2),
        "p50_s": round(statistics.median(lat), 3) if lat else None,
        "p99_s": round(p99, 3) if p99 is not None else None,
        "status_codes": dict(sorted(codes.items())),
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--capacity", type=int, default=2)
    ap.add_argument("--queue", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument(
        "--max-inflight",
        type=int,
        default=None,
        help="ingress admission limit (default: derived from the LM's capacity)",
    )
    args = ap.parse_args()

    import ray
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    work = Path(tempfile.mkdtemp(prefix="vidcap-serve-bench-"))
    model = build_tiny_model("qwen2_vl", work / "model", hidden_size=args.hidden, num_layers=4)
    video = work / "clip.mp4"
    synth.write_video(video, seconds=4.0, fps=10.0, width=128, height=96, pattern="moving")
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": 8399})
    small = {"num_cpus": 0.5}
    lm = {
        **small,
        "max_ongoing_requests": args.capacity,
        "max_queued_requests": args.queue,
        "max_batch_size": args.capacity,
    }
    config = ServeConfig(
        model={"model": str(model)},
        generation={"max_new_tokens": args.max_tokens},
        ingress={"num_cpus": 0.25, "max_ongoing_requests": 64, "max_queued_requests": 64},
        decoder={**small, "max_ongoing_requests": 8},
        encoder={**small, "max_ongoing_requests": 8},
        lm=lm,
        max_inflight=args.max_inflight,
    )
    serve.run(build_app(config), name="vidcap", route_prefix="/")
    url = "http://127.0.0.1:8399/v1/chat/completions"
    data_url = "data:video/mp4;base64," + base64.b64encode(video.read_bytes()).decode()
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": data_url}},
                    {"type": "text", "text": "Describe."},
                ],
            }
        ],
        "max_tokens": args.max_tokens,
        "temperature": 0,
    }
    run_phase(url, body, 1, 5)  # warm-up
    one = run_phase(url, body, args.capacity, args.seconds)
    three = run_phase(url, body, 3 * args.capacity, args.seconds)
    report = {
        "model": f"tiny qwen2_vl hidden={args.hidden} layers=4, max_tokens={args.max_tokens}",
        "lm_capacity": args.capacity,
        "lm_queue": args.queue,
        "ingress_inflight_limit": config.inflight_limit,
        "at_1x": one,
        "at_3x": three,
        "p99_ratio_3x_vs_1x": round(three["p99_s"] / one["p99_s"], 2)
        if one["p99_s"] and three["p99_s"]
        else None,
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
