"""Shared fixtures: tiny offline models, built once per test session."""

from __future__ import annotations

import os

import pytest

# Nothing in the tests may reach the hub; fail fast if some code path tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Return a function (model_type, **builder options) -> folder of a tiny random-weight
    model, built on first use (the options of a ``TinyCase`` are its ``kwargs``)."""
    from pipelines.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[tuple, str] = {}

    def get(family: str, **options) -> str:
        key = (family, *sorted(options.items()))
        if key not in built:
            name = "-".join([family, *(str(v) for _, v in sorted(options.items()))])
            built[key] = str(build_tiny_model(family, root / name, **options))
        return built[key]

    return get
