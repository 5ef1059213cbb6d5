"""``vidcap serve``: the OpenAI-compatible endpoint on a local Ray (or a cluster)."""

from __future__ import annotations

import argparse
import math
import os
import signal
import threading
from pathlib import Path

from pipelines.core.usage import UsageError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the OpenAI-compatible endpoint on a local Ray")
    p.add_argument("--model", default=None, help="hub id or local folder (overrides --config)")
    p.add_argument("--config", default=None, help="YAML file with ServeConfig fields")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--address", default=None, help="join a Ray cluster instead of a local one")
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    import ray
    import yaml
    from ray import serve

    from serve.app import build_app
    from serve.config import ServeConfig

    data = {}
    if args.config:
        try:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise UsageError(f"--config {args.config}: {exc}") from exc
    if args.model:
        data["model"] = {**data.get("model", {}), "model": args.model}
    try:
        config = ServeConfig.model_validate(data)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.address:
        ray.init(address=args.address)
    else:
        # Like the offline job: a local Ray must fit every deployment's first replica, or
        # the endpoint would wait forever for CPUs (logical CPUs may exceed cores here).
        deployments = (config.ingress, config.decoder, config.encoder, config.lm)
        if config.asr is not None:  # the speech-recognition deployment needs its CPUs too
            deployments += (config.transcriber,)
        needed = sum(max(1, d.min_replicas) * d.num_cpus for d in deployments)
        ray.init(
            address="local",
            num_cpus=max(os.cpu_count() or 1, math.ceil(needed)),
            include_dashboard=False,
        )
    serve.start(http_options={"host": args.host, "port": args.port})
    try:
        app = build_app(config)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    serve.run(app, name="vidcap", route_prefix="/")
    print(
        f"vidcap: serving {config.model_name} at http://{args.host}:{args.port}/v1 "
        "(Ctrl-C to stop)",
        flush=True,
    )
    # Stop cleanly on Ctrl-C and on SIGTERM (process managers), so Ray's processes go too.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    serve.shutdown()
    ray.shutdown()
    return 0
