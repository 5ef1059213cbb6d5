from __future__ import annotations

import pydantic
import pytest

from pipelines import config as cfg

CONFIGS = [cfg.DecodeConfig, cfg.ModelConfig, cfg.GenerationConfig, cfg.PoolConfig, cfg.JobConfig]


@pytest.mark.parametrize("model", CONFIGS, ids=lambda m: m.__name__)
def test_every_field_is_documented(model):
    undocumented = [n for n, f in model.model_fields.items() if not f.description]
    assert undocumented == []


@pytest.mark.parametrize("model", CONFIGS, ids=lambda m: m.__name__)
def test_unknown_keys_are_refused(model):
    required = {"inputs": ["x"], "out": "o"} if model is cfg.JobConfig else {}
    with pytest.raises(pydantic.ValidationError, match="Extra inputs are not permitted"):
        model(**required, no_such_field=1)


def test_decode_rules():
    with pytest.raises(pydantic.ValidationError, match="exactly one of fps or num_frames"):
        cfg.DecodeConfig(fps=2, num_frames=8)
    with pytest.raises(pydantic.ValidationError, match="min_frames=9 exceeds max_frames=8"):
        cfg.DecodeConfig(min_frames=9, max_frames=8)
    with pytest.raises(pydantic.ValidationError, match="greater than 0"):
        cfg.DecodeConfig(clip_s=0)


def test_pool_bounds():
    with pytest.raises(pydantic.ValidationError, match="min_actors=3 exceeds max_actors=2"):
        cfg.PoolConfig(min_actors=3, max_actors=2)
