"""Hostile load on the endpoint: 1,000 hostile requests mixed with normal ones, on loopback.

Run by hand (never in CI):  .venv/bin/python bench/serve_hostile.py --hostile 1000

Starts a local Ray + Serve on loopback with a tiny random-weight Qwen2-VL and a loopback
media server (127.0.0.2: a 404, a redirect to 127.0.0.1, a server that drips one byte every
0.4 s). --normal-clients closed-loop clients send normal chat completions (an image as a
data URL) while --hostile-clients threads send --hostile requests drawn in turn from a list
of attacks: wrong JSON shapes, a 100,000-deep array, SSRF targets in IPv6 disguises,
unparseable URLs, image and clip bombs, over-limit messages/text/max_tokens, a slow media
server, streams whose client vanishes after the first bytes, clients that close before any
answer. Reports the success rate and p50/p99 latency of the normal requests, the status
mix of the hostile ones (a 500 is counted as such), and the ingress replica's RSS before,
at peak and after. Writes bench/results/serve_hostile.json.
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from fractions import Fraction
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import requests  # noqa: E402

from pipelines.models.tiny import build_tiny_model  # noqa: E402

PORT = 8398
MEDIA_HOST = "127.0.0.2"


def _png_header(width: int, height: int) -> bytes:
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    head = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (width + 1) * 16)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _sparse_video(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=1)
        stream.width = stream.height = 64
        stream.pix_fmt = "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1)
        for i in range(7):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 30, np.uint8), "rgb24")
            frame.pts, frame.time_base = i * 600, Fraction(1, 1)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _media_server() -> str:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            if self.path == "/drip":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(50):
                    time.sleep(0.4)
                    try:
                        self.wfile.write(b"x")
                        self.wfile.flush()
                    except OSError:
                        return
                return
            if self.path == "/to-internal":
                self.send_response(302)
                self.send_header("Location", "http://127.0.0.1:9/")
                self.end_headers()
                return
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer((MEDIA_HOST, 0), Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return f"http://{MEDIA_HOST}:{httpd.server_address[1]}"


def _chat(url: str, kind: str = "video_url", text: str = "Describe.", **extra) -> dict:
    content = [{"type": kind, kind: {"url": url}}, {"type": "text", "text": text}]
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 4, **extra}


def _attacks(work: Path, media: str, still: str) -> list[tuple[str, str, dict]]:
    """(name, path, requests kwargs | {"raw": ...}) of each attack."""
    raw = lambda b: {"data": b, "headers": {"Content-Type": "application/json"}}  # noqa: E731
    sparse = (
        "data:video/mp4;base64," + base64.b64encode((work / "sparse.mp4").read_bytes()).decode()
    )
    bomb = "data:image/png;base64," + base64.b64encode(_png_header(10_000, 10_000)).decode()
    chat, caps = "/v1/chat/completions", "/v1/captions"
    return [
        ("list", chat, raw(b"[1]")),
        ("null", caps, raw(b"null")),
        ("deep", chat, raw(b"[" * 100_000 + b"]" * 100_000)),
        ("not-json", chat, raw(b"{nope")),
        ("url-bracket", chat, {"json": _chat("http://[::1")}),
        ("url-nfkc", chat, {"json": _chat("http://a\uff03@b/x.mp4")}),
        ("nat64", chat, {"json": _chat("http://[64:ff9b::7f00:1]/x")}),
        ("6to4", chat, {"json": _chat("http://[2002:7f00:1::1]/x")}),
        ("metadata", chat, {"json": _chat("http://169.254.169.254/latest/")}),
        ("redirect-internal", chat, {"json": _chat(f"{media}/to-internal")}),
        ("upstream-404", chat, {"json": _chat(f"{media}/missing")}),
        ("drip", chat, {"json": _chat(f"{media}/drip")}),
        ("image-bomb", chat, {"json": _chat(bomb, "image_url")}),
        ("clip-bomb", caps, {"json": {"url": sparse}}),
        ("max-tokens", chat, {"json": _chat(still, "image_url", max_tokens=8192)}),
        ("text", chat, {"json": _chat(still, "image_url", text="x" * 40_000)}),
        ("messages", chat, {"json": {"messages": [{"role": "user", "content": "hi"}] * 100}}),
        ("vanish-stream", chat, {"raw": _chat(still, "image_url", stream=True, max_tokens=32)}),
        ("vanish-early", chat, {"raw": _chat(still, "image_url", max_tokens=32), "early": True}),
        ("unknown-route", "/v1/embeddings", {"json": {}}),
    ]


def _vanish(base: str, path: str, payload: dict, early: bool) -> int:
    body = json.dumps(payload).encode()
    with socket.create_connection(("127.0.0.1", PORT), timeout=60) as sock:
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        sock.sendall(head.encode() + body)
        if early:
            return 0  # gone before any answer
        status = sock.recv(64)[9:12]
        return int(status) if status.isdigit() else -1  # gone after the first bytes


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--hostile", type=int, default=1000)
    ap.add_argument("--hostile-clients", type=int, default=4)
    ap.add_argument("--normal-clients", type=int, default=2)
    args = ap.parse_args()

    import ray
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    work = Path(tempfile.mkdtemp(prefix="vidcap-hostile-bench-"))
    model = build_tiny_model("qwen2_vl", work / "model", hidden_size=128, num_layers=2)
    _sparse_video(work / "sparse.mp4")
    from PIL import Image

    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(work / "still.png")
    still = "data:image/png;base64," + base64.b64encode((work / "still.png").read_bytes()).decode()
    media = _media_server()
    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": PORT})
    small = {"num_cpus": 0.5}
    config = ServeConfig(
        model={"model": str(model)},
        generation={"max_new_tokens": 4},
        request_timeout_s=60,
        decode={"timeout_s": 30},
        max_inflight=8,
        limits={"max_clips": 8},
        security={"fetch_timeout_s": 2.0, "allow_networks": [f"{MEDIA_HOST}/32"]},
        ingress={"num_cpus": 0.25, "max_ongoing_requests": 64, "max_queued_requests": 64},
        decoder={**small, "max_ongoing_requests": 8},
        encoder={**small, "max_ongoing_requests": 8},
        lm={**small, "max_ongoing_requests": 4, "max_batch_size": 4},
    )
    serve.run(build_app(config), name="vidcap", route_prefix="/")
    base = f"http://127.0.0.1:{PORT}"
    ingress = serve.get_deployment_handle("Ingress", app_name="vidcap")
    pid = ingress.stats.remote().result()["pid"]
    normal = _chat(still, "image_url")
    for _ in range(3):  # warm-up
        requests.post(f"{base}/v1/chat/completions", json=normal, timeout=120)
    rss_before = _rss_mb(pid)

    attacks = _attacks(work, media, still)
    hostile_codes: Counter[str] = Counter()
    normal_codes: Counter[int] = Counter()
    latencies: list[float] = []
    lock = threading.Lock()
    todo = iter(range(args.hostile))
    done = threading.Event()
    peak = [rss_before]
    rss_by_quarter: dict[str, float] = {}

    def hostile_client() -> None:
        session = requests.Session()
        for i in todo:
            name, path, kwargs = attacks[i % len(attacks)]
            kwargs = dict(kwargs)
            try:
                if "raw" in kwargs:
                    code = _vanish(base, path, kwargs["raw"], kwargs.get("early", False))
                else:
                    code = session.post(f"{base}{path}", timeout=120, **kwargs).status_code
            except (requests.RequestException, OSError):
                code = -1
            with lock:
                hostile_codes[f"{name}:{code}"] += 1
                sent = sum(hostile_codes.values())
                if sent % max(1, args.hostile // 4) == 0:  # RSS at each quarter: a plateau?
                    rss_by_quarter[str(sent)] = _rss_mb(pid)
                    print(f"{sent} hostile requests sent", flush=True)

    def normal_client() -> None:
        session = requests.Session()
        while not done.is_set():
            t = time.perf_counter()
            try:
                code = session.post(
                    f"{base}/v1/chat/completions", json=normal, timeout=120
                ).status_code
            except requests.RequestException:
                code = -1
            with lock:
                normal_codes[code] += 1
                if code == 200:
                    latencies.append(time.perf_counter() - t)
            if code == 503:
                time.sleep(0.05)

    def sample() -> None:
        while not done.wait(0.5):
            peak[0] = max(peak[0], _rss_mb(pid))

    started = time.monotonic()
    workers = [threading.Thread(target=hostile_client) for _ in range(args.hostile_clients)]
    others = [threading.Thread(target=normal_client) for _ in range(args.normal_clients)]
    others.append(threading.Thread(target=sample))
    for t in workers + others:
        t.start()
    for t in workers:
        t.join()
    done.set()
    for t in others:
        t.join()
    wall = time.monotonic() - started
    time.sleep(3)  # let cancelled work settle before the last reading
    stats = ingress.stats.remote().result()
    lat = sorted(latencies)
    total_normal = sum(normal_codes.values())
    by_status: Counter[int] = Counter()
    for key, n in hostile_codes.items():
        by_status[int(key.rsplit(":", 1)[1])] += n
    report = {
        "hostile_requests": args.hostile,
        "wall_s": round(wall, 1),
        "normal": {
            "requests": total_normal,
            "success_rate": round(normal_codes[200] / total_normal, 4) if total_normal else None,
            "status_codes": dict(sorted(normal_codes.items())),
            "p50_s": round(statistics.median(lat), 3) if lat else None,
            "p99_s": round(lat[min(len(lat) - 1, int(0.99 * len(lat)))], 3) if lat else None,
        },
        "hostile_status_codes": dict(sorted(by_status.items())),
        "hostile_by_attack": dict(sorted(hostile_codes.items())),
        "hostile_500s": by_status[500],
        "ingress_rss_mb": {
            "before": rss_before,
            "after_n_hostile": rss_by_quarter,
            "peak": peak[0],
            "after": _rss_mb(pid),
        },
        "ingress_inflight_after": stats["inflight"],
    }
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / "serve_hostile.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
