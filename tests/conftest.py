"""Shared fixtures: tiny offline models, built once per test session."""

from __future__ import annotations

import os

import pytest

# Nothing in the tests may reach the hub; fail fast if some code path tries.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Return a function family -> folder of a tiny random-weight model, built on first use."""
    from pipelines.models.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    built: dict[str, str] = {}

    def get(family: str) -> str:
        if family not in built:
            built[family] = str(build_tiny_model(family, root / family))
        return built[family]

    return get
