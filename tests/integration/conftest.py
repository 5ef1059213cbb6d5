"""One local Ray for the whole integration session (started in-process, no dashboard)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def ray_session():
    import ray

    # Enough logical CPUs for a decode task plus one encoder and one LM actor on a
    # 2-core machine; the stages take turns on the real cores.
    ray.init(
        address="local",  # never attach to some other cluster found via RAY_ADDRESS
        num_cpus=4,
        include_dashboard=False,
        configure_logging=False,
        runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}},
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def serve_url(ray_session):
    """Serve's HTTP proxy on a free loopback port, shared by every endpoint test."""
    import socket

    from ray import serve

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    yield f"http://127.0.0.1:{port}"
    serve.shutdown()
