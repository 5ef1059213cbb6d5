"""``vidcap caption`` options: generated from JobConfig, a job file, flags over the file."""

from __future__ import annotations

import argparse
import json
import re
import types
import typing
from pathlib import Path
from typing import Literal

import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field

from pipelines.cli import build_parser, main
from pipelines.cli.job_flags import add_job_args, job_config_from_args
from pipelines.core.config import DEFAULT_MODEL, DEFAULT_PROMPT, JobConfig

HAND_NAMED = {"inputs": "INPUT", "prompts": "--prompt", "questions": "--question"}


def caption_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_job_args(parser)
    return parser


def parse(*argv: str) -> JobConfig:
    return job_config_from_args(caption_parser().parse_args(list(argv)))


def leaf_paths(model: type[BaseModel], prefix: str = "") -> list[tuple[str, typing.Any]]:
    """Every leaf field of a config (dotted path, annotation), found without the CLI's code."""
    leaves = []
    for name, field in model.model_fields.items():
        args = [a for a in typing.get_args(field.annotation) if a is not type(None)]
        is_union = typing.get_origin(field.annotation) in (typing.Union, types.UnionType)
        inner = args[0] if is_union and len(args) == 1 else field.annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            leaves += leaf_paths(inner, f"{prefix}{name}.")
        else:
            leaves.append((f"{prefix}{name}", inner))
    return leaves


def actions_by_dest(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def lookup(config: BaseModel, path: str):
    for part in path.split("."):
        config = getattr(config, part)
    return config


def test_every_leaf_field_of_jobconfig_has_a_flag():
    by_dest = actions_by_dest(caption_parser())
    missing = [p for p, _ in leaf_paths(JobConfig) if p not in HAND_NAMED and p not in by_dest]
    assert missing == []
    assert len(leaf_paths(JobConfig)) > 50  # the walk did descend into every section


# Optional sections of JobConfig, switched on by their own flag.
OPTIONAL = ("summarize", "asr")


def _candidates(annotation, default):
    return [c for c in _values(annotation, default) if c != default]


def _values(annotation, default):
    if typing.get_origin(annotation) is Literal:
        return [c for c in typing.get_args(annotation) if c != default]
    if annotation is bool:
        return [not default]
    if annotation is int:
        base = default or 0
        return [base + 1, base - 1, 64, 2]
    if annotation is float:
        base = default or 0.0
        return [base * 0.5, base + 0.5, 1.0, 0.5]
    # Templates need their placeholder ({lines}, {speech}, {context}); a language is short.
    return ["{lines} flag value", "{speech}{context}", "en"]


@pytest.mark.parametrize(
    "path,annotation",
    [leaf for leaf in leaf_paths(JobConfig) if leaf[0] not in HAND_NAMED],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_each_flag_sets_its_own_field(path, annotation):
    action = actions_by_dest(caption_parser())[path]
    section = path.split(".")[0]
    base = ["v.mp4", "--out", "o"] + ([f"--{section}"] if section in OPTIONAL else [])
    if path.endswith(".min_actors"):  # may not exceed max_actors, 1 by default
        base += [f"--{path.split('.')[0]}-max-actors", "64"]
    default = lookup(parse(*base).model_copy(), path) if "summarize.model." not in path else None
    landed = []
    for value in _candidates(annotation, default):
        if isinstance(value, bool):
            flag = action.option_strings[0] if value else f"--no-{action.option_strings[0][2:]}"
            argv = [*base, flag]
        else:
            argv = [*base, action.option_strings[0], str(value)]
        try:
            config = parse(*argv)
        except ValueError:  # a bound or a cross-field rule: try the next value
            continue
        landed.append(lookup(config, path) == value)
        break
    assert landed == [True]


def test_help_shows_the_defaults_jobconfig_really_applies():
    by_dest = actions_by_dest(caption_parser())
    real = parse("v.mp4", "--out", "o", *(f"--{s}" for s in OPTIONAL))
    for path, _ in leaf_paths(JobConfig):
        if path in HAND_NAMED or path == "out" or path.startswith("summarize.model."):
            continue
        value = lookup(real, path)
        shown = "none" if value is None else ("on" if value else "off")
        if not isinstance(value, bool | type(None)):
            shown = repr(value) if isinstance(value, str) and "\n" in value else str(value)
        assert f"(default: {shown.replace('%', '%%')})" in by_dest[path].help, path


def test_caption_help_offers_chunking_keyframes_and_the_real_model_default(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["caption", "--help"])
    assert exc.value.code == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in (
        "--chunking {fixed,scenes,none}",
        "--decode-mode {exact,keyframes}",
        "--overlap-s",
        "--min-clip-s",
        "--max-clip-s",
        "--scene-threshold",
        "--config FILE",
        f"--model MODEL A Hugging Face hub id or a local folder written by `save_pretrained`. "
        f"(default: {DEFAULT_MODEL})",
    ):
        assert text in out


def test_readme_flags_keep_their_names_and_meaning(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("From the file.\n")
    c = parse(
        "a.mp4", "b/", "--out", "o", "--clip-s", "5", "--fps", "1", "--max-frames", "32",
        "--max-side-px", "224", "--max-new-tokens", "20", "--temperature", "0.5", "--top-p",
        "0.9", "--seed", "7", "--device", "cpu", "--dtype", "float32", "--encoder-actors", "2",
        "--lm-actors", "3", "--encoder-batch", "8", "--lm-batch", "16", "--address", "auto",
        "--fail-on-error", "--overwrite", "--video-key", "content", "--max-attempts", "5",
        "--stall-timeout-s", "60", "--commit-interval-s", "5", "--prompt", "A?", "--prompts",
        str(prompts), "--question", "Q?", "--revision", "main", "--summarize",
        "--summary-model", "text-lm", "--summary-max-new-tokens", "64",
        "--summary-context-tokens", "1024",
    )  # fmt: skip
    assert c.inputs == ["a.mp4", "b/"] and c.out == "o"
    assert (c.decode.clip_s, c.decode.fps, c.decode.max_frames, c.decode.max_side_px) == (
        5,
        1,
        32,
        224,
    )
    g = c.generation
    assert (g.max_new_tokens, g.temperature, g.top_p, g.seed) == (20, 0.5, 0.9, 7)
    assert (c.model.device, c.model.dtype, c.model.revision) == ("cpu", "float32", "main")
    assert (c.encoder.min_actors, c.encoder.max_actors, c.encoder.batch_size) == (2, 2, 8)
    assert (c.lm.min_actors, c.lm.max_actors, c.lm.batch_size) == (3, 3, 16)
    assert (c.address, c.fail_on_error, c.overwrite, c.video_key) == ("auto", True, True, "content")
    assert (c.max_attempts, c.stall_timeout_s, c.commit_interval_s) == (5, 60, 5)
    assert c.prompts == ["A?", "From the file."] and c.questions == ["Q?"]
    s = c.summarize
    assert (s.model.model, s.model.revision, s.max_new_tokens, s.context_tokens) == (
        "text-lm",
        None,
        64,
        1024,
    )
    # The summary model runs where the captioning model runs unless told otherwise.
    assert (s.model.device, s.model.dtype) == ("cpu", "float32")
    assert parse("v", "--out", "o", "--num-frames", "8").decode.fps is None


def test_a_job_file_runs_end_to_end_and_flags_override_it(tmp_path):
    job = {
        "inputs": ["s3://bucket/videos/"],
        "out": "s3://bucket/captions",
        "prompts": ["From the file."],
        "decode": {"chunking": "scenes", "min_clip_s": 3.0, "clip_s": 5.0, "fps": 1.0},
        "model": {"model": "some/model", "device": "cpu"},
        "encoder": {"min_actors": 1, "max_actors": 4, "num_gpus": 0.5},
        "summarize": {"max_new_tokens": 100},
        "rows_per_shard": 77,
    }
    for name, text in (("job.yaml", yaml.safe_dump(job)), ("job.json", json.dumps(job))):
        path = tmp_path / name
        path.write_text(text)
        c = parse("--config", str(path))
        assert c.inputs == job["inputs"] and c.out == job["out"]
        assert c.prompts == ["From the file."] and c.rows_per_shard == 77
        assert (c.decode.chunking, c.decode.min_clip_s, c.decode.clip_s) == ("scenes", 3.0, 5.0)
        assert (c.model.model, c.model.device, c.encoder.max_actors) == ("some/model", "cpu", 4)
        assert c.encoder.num_gpus == 0.5 and c.summarize.max_new_tokens == 100

    over = parse(
        "--config", str(tmp_path / "job.yaml"), "local.mp4", "--out", "here", "--clip-s", "7",
        "--num-frames", "8", "--prompt", "From a flag.", "--encoder-actors", "2",
        "--no-summarize", "--device", "cuda",
    )  # fmt: skip
    assert over.inputs == ["local.mp4"] and over.out == "here"
    assert (over.decode.clip_s, over.decode.num_frames, over.decode.fps) == (7, 8, None)
    assert over.decode.chunking == "scenes"  # what no flag touched stays the file's
    assert over.prompts == ["From a flag."] and over.summarize is None
    assert (over.encoder.min_actors, over.encoder.max_actors) == (2, 2)
    assert (over.model.model, over.model.device) == ("some/model", "cuda")
    assert parse("--config", str(tmp_path / "job.yaml"), "--question", "Q?").prompts == [
        "From the file."
    ]


@pytest.mark.parametrize(
    "text,needle",
    [
        ("inputs: [a.mp4]\nout: o\ndecode:\n  clip_sec: 3\n", "unknown key 'decode.clip_sec'"),
        ("inputs: [a.mp4]\nout: o\nmodle: {model: x}\n", "unknown key 'modle'"),
        ("inputs: [a.mp4]\nout: o\ndecode: {clip_s: -1}\n", "decode.clip_s (--clip-s)"),
        ("inputs: [a.mp4\n", "does not parse"),
        ("- a.mp4\n", "must hold a mapping"),
        ("inputs: [a.mp4]\n", "give --out"),
    ],
)
def test_a_bad_job_file_exits_2_naming_the_problem(tmp_path, capsys, text, needle):
    path = tmp_path / "job.yaml"
    path.write_text(text)
    assert main(["caption", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert err.startswith("vidcap: error: ")


def test_a_missing_job_file_exits_2(tmp_path, capsys):
    assert main(["caption", "--config", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read --config" in capsys.readouterr().err


def test_conflicting_flags_are_refused_not_guessed():
    with pytest.raises(ValueError, match="exclusive"):
        parse("v", "--out", "o", "--fps", "1", "--num-frames", "8")
    with pytest.raises(ValueError, match="give it alone"):
        parse("v", "--out", "o", "--encoder-actors", "2", "--encoder-max-actors", "4")
    with pytest.raises(ValueError, match="needs --summarize"):
        parse("v", "--out", "o", "--summary-max-new-tokens", "64")
    with pytest.raises(ValueError, match="contradicts --no-summarize"):
        parse("v", "--out", "o", "--no-summarize", "--summary-model", "m")


def test_questions_alone_add_no_caption_prompt_and_no_ask_gives_the_default():
    assert parse("v", "--out", "o").prompts == [DEFAULT_PROMPT]
    only_questions = parse("v", "--out", "o", "--question", "Who?")
    assert only_questions.prompts == [] and only_questions.questions == ["Who?"]


class _Later(BaseModel):
    """A section another engineer adds later."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    timeout_s: float = Field(default=5.0, gt=0)
    """Seconds it may take."""

    mode: Literal["a", "b"] = "a"
    """How it works."""


class _Grown(JobConfig):
    later: _Later = _Later()
    """A new section."""

    clip_s: float = 1.0
    """A top-level field whose plain name a decode field already holds."""


def test_a_field_added_later_gets_its_flag_without_a_cli_edit():
    parser = argparse.ArgumentParser()
    add_job_args(parser, _Grown)
    by_dest = actions_by_dest(parser)
    assert by_dest["later.timeout_s"].option_strings == ["--later-timeout-s"]
    assert by_dest["later.mode"].choices == ("a", "b")
    assert "Seconds it may take. (default: 5.0)" == by_dest["later.timeout_s"].help
    # Two fields never share a flag: the later one is qualified.
    assert by_dest["decode.clip_s"].option_strings == ["--clip-s"]
    assert by_dest["clip_s"].option_strings == ["--job-clip-s"]


def test_the_top_level_parser_still_exposes_caption_for_deploy_files():
    args = build_parser().parse_args(["caption", "v.mp4", "--out", "o", "--address", "auto"])
    assert args.command == "caption" and args.address == "auto" and args.out == "o"


README = (Path(__file__).parents[3] / "README.md").read_text()


def test_every_flag_of_the_readme_options_table_exists():
    table = README.split("| option | default | meaning |")[1].split("Exit codes:")[0]
    documented = set(re.findall(r"`(--[a-z][a-z0-9-]*[a-z0-9])[` ]", table))
    options = {s for a in caption_parser()._actions for s in a.option_strings}
    assert len(documented) > 30 and documented - options == set()


def test_the_readme_job_file_is_a_valid_job(tmp_path):
    text = README.split("# job.yaml")[1].split("```")[0]
    path = tmp_path / "job.yaml"
    path.write_text(text.split("\n", 1)[1])
    c = parse("--config", str(path), "--clip-s", "5")
    assert (c.decode.chunking, c.decode.clip_s, c.lm.min_actors) == ("scenes", 5, 2)
