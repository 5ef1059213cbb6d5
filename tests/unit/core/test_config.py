from __future__ import annotations

import pydantic
import pytest

from pipelines.core import config as cfg

CONFIGS = [
    cfg.DecodeConfig,
    cfg.ModelConfig,
    cfg.GenerationConfig,
    cfg.PoolConfig,
    cfg.SummaryConfig,
    cfg.JobConfig,
]


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


def test_prompts_and_questions_rules():
    base = {"inputs": ["x"], "out": "o"}
    assert cfg.JobConfig(**base).prompts == [cfg.DEFAULT_PROMPT]
    with pytest.raises(pydantic.ValidationError, match="at least one prompt or question"):
        cfg.JobConfig(**base, prompts=[])
    with pytest.raises(pydantic.ValidationError, match="appears twice"):
        cfg.JobConfig(**base, prompts=["a"], questions=["a"])
    with pytest.raises(pydantic.ValidationError, match="must contain"):
        cfg.SummaryConfig(prompt="no placeholder")


def test_cli_collects_prompts_questions_and_summary_settings(tmp_path):
    from pipelines.cli import build_parser, job_config_from_args

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# house style\nList the objects.\n\nWhich colours?\n")

    def parse(*extra):
        args = build_parser().parse_args(["caption", "v.mp4", "--out", "o", *extra])
        return job_config_from_args(args)

    assert parse().prompts == [cfg.DEFAULT_PROMPT] and parse().summarize is None
    c = parse("--prompt", "Describe.", "--prompts", str(prompts), "--question", "Who?")
    assert c.prompts == ["Describe.", "List the objects.", "Which colours?"]
    assert c.questions == ["Who?"]
    only_questions = parse("--question", "Who?", "--question", "Where?")
    assert only_questions.prompts == [] and only_questions.questions == ["Who?", "Where?"]
    s = parse("--summarize", "--summary-context-tokens", "2048").summarize
    assert (s.context_tokens, s.max_new_tokens, s.model) == (2048, 256, None)
    s = parse("--summarize", "--summary-model", "Qwen/Qwen2.5-7B-Instruct", "--device", "cpu")
    assert s.summarize.model.model == "Qwen/Qwen2.5-7B-Instruct"
    assert s.summarize.model.device == "cpu"
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no prompt"):
        parse("--prompts", str(empty))
