"""``vidcap caption``'s options, generated from ``JobConfig``, and the ``JobConfig`` they build.

Every leaf field of ``JobConfig``, nested sections included, gets a flag, so a field added to a
config later gets one with no edit here (a test walks the model to hold that):

- name: the field's name in kebab case behind its section's prefix (``_PREFIXES``: none for
  decode, model and generation, ``--encoder-`` and ``--lm-`` for the pools, ``--summary-`` for
  summaries; a new section ``foo`` gets ``--foo-``). A name already taken falls back to
  ``--<section>-<field>`` (``--job-<field>`` at the top), so two fields never fight over one.
- help: the field's docstring; the default shown is the one ``JobConfig`` really applies.
- type: from the annotation (``Literal`` gives choices, ``bool`` gives ``--x/--no-x``).

Hand-named on top, as README documents them: ``INPUT...``; ``--prompt`` (repeatable) and
``--prompts FILE`` fill ``prompts``; ``--question`` fills ``questions``; ``--encoder-batch`` and
``--lm-batch`` (``batch_size``); ``--<pool>-actors N`` sets a pool's min and max together; an
optional section (``--summarize``) is switched on or off by its own name.

``--config FILE`` (YAML, or JSON by its ``.json`` suffix) holds ``JobConfig``'s fields in its
own nesting; flags override the file, and the merged whole is validated once, by ``JobConfig``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from pipelines.core.config import DEFAULT_PROMPT, JobConfig, PoolConfig

_HAND_NAMED = {"inputs", "prompts", "questions"}
_PREFIXES = {
    "decode": "",
    "model": "",
    "generation": "",
    "encoder": "encoder-",
    "lm": "lm-",
    "summarize": "summary-",
    "summarize.model": "summary-",
    "asr.model": "asr-",
    "asr.pool": "asr-",
}
_ALIASES = {
    "encoder.batch_size": ("--encoder-batch",),
    "lm.batch_size": ("--lm-batch",),
    "asr.pool.batch_size": ("--asr-batch",),
}
# Giving one of these by flag unsets the other, whatever the file said.
_EXCLUSIVE = (("decode.fps", "decode.num_frames"),)
# A summary model named by flags runs where the captioning model runs unless told otherwise
# (its revision stays its own: a revision names a commit of one checkpoint).
_INHERITED = {"summarize.model.device": "model.device", "summarize.model.dtype": "model.dtype"}
_SHOWN_DEFAULT = {
    "summarize.model.model": "--model",
    "summarize.model.device": "as --device",
    "summarize.model.dtype": "as --dtype",
}


@dataclasses.dataclass(frozen=True)
class Flag:
    """One generated option: where its value goes in ``JobConfig`` and what it defaults to."""

    path: str  # dotted, e.g. "decode.clip_s"
    names: tuple[str, ...]
    field: FieldInfo
    default: Any  # what JobConfig applies when nothing sets this field


@dataclasses.dataclass(frozen=True)
class Section:
    """A nested config: a pool gets ``--<prefix>actors``; an optional top-level one a switch."""

    path: str
    prefix: str
    model: type[BaseModel]
    optional: bool
    field: FieldInfo


def kebab(name: str) -> str:
    return name.replace("_", "-")


def _nested_model(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """(the BaseModel an annotation holds, whether it may be None)."""
    args = typing.get_args(annotation)
    optional = typing.get_origin(annotation) in (typing.Union, types.UnionType) and (
        type(None) in args
    )
    inner = [a for a in args if a is not type(None)] if optional else [annotation]
    if len(inner) == 1 and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
        return inner[0], optional
    return None, optional


def walk(
    model: type[BaseModel] = JobConfig,
) -> tuple[list[Flag], list[Section]]:
    """Every leaf field of ``model`` as a ``Flag`` and every nested config as a ``Section``."""
    flags: list[Flag] = []
    sections: list[Section] = []
    taken = {"--config", "--prompt", "--prompts", "--question", "--help"}

    def visit(cls: type[BaseModel], path: str, prefix: str, defaults: BaseModel | None) -> None:
        for name, field in cls.model_fields.items():
            dotted = f"{path}.{name}" if path else name
            if dotted in _HAND_NAMED:
                continue
            if defaults is not None:
                default = getattr(defaults, name)
            else:
                default = field.get_default(call_default_factory=True)
            nested, optional = _nested_model(field.annotation)
            if nested is not None:
                sub = _PREFIXES.get(dotted, f"{prefix}{kebab(name)}-")
                sections.append(Section(dotted, sub, nested, optional, field))
                visit(nested, dotted, sub, default if isinstance(default, BaseModel) else None)
                continue
            long = f"--{prefix}{kebab(name)}"
            if long in taken:
                long = f"--{kebab(path.replace('.', '-') or 'job')}-{kebab(name)}"
            names = (long, *_ALIASES.get(dotted, ()))
            taken.update(names)
            flags.append(Flag(dotted, names, field, default))

    visit(model, "", "", None)
    return flags, sections


def _scalar_type(annotation: Any) -> tuple[Any, tuple | None, bool]:
    """(argparse type, choices, repeatable) for a leaf annotation; Optional is unwrapped."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        annotation = inner[0] if len(inner) == 1 else str
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _scalar_type(typing.get_args(annotation)[0])
    if origin is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices, False
    if origin is list:
        item, choices, _ = _scalar_type((typing.get_args(annotation) or (str,))[0])
        return item, choices, True
    if annotation in (int, float, str, bool):
        return annotation, None, False
    return str, None, False  # anything else is left to pydantic's coercion


def _shown(flag: Flag) -> str:
    if flag.path in _SHOWN_DEFAULT:
        return _SHOWN_DEFAULT[flag.path]
    if flag.field.is_required():
        return "required, here or in --config"
    value = flag.default
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str) and "\n" in value:
        return repr(value)
    return str(value)


def _help(field: FieldInfo, default: str | None = None) -> str:
    text = " ".join((field.description or "").replace("``", "`").split())
    text = text.replace("%", "%%")  # argparse formats help with %
    return f"{text} (default: {default})" if default is not None else text


def add_job_args(parser: argparse.ArgumentParser, model: type[BaseModel] = JobConfig) -> None:
    """Add ``vidcap caption``'s options (every field of ``model``) to ``parser``."""
    flags, sections = walk(model)
    parser.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",
        help="video files, directories, globs, manifests (.parquet/.jsonl/.csv) or URIs",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML or JSON file of JobConfig fields (README: Job files); flags override it",
    )
    parser.add_argument(
        "--prompt",
        action="append",
        help="prompt for every clip; repeat it to ask several from one encoding "
        f"(default: {DEFAULT_PROMPT!r}; none when only --question is given)",
    )
    parser.add_argument(
        "--prompts",
        metavar="FILE",
        help="text file of prompts, one per line (blank lines and lines starting with # skipped)",
    )
    parser.add_argument(
        "--question",
        action="append",
        help="question asked of every clip (rows with task=qa); repeatable",
    )
    groups = {"": parser.add_argument_group("job")}
    for s in sections:
        title = f"{s.path} ({s.model.__name__})"
        groups[s.path] = parser.add_argument_group(title, _help(s.field))
        if s.optional and "." not in s.path:
            groups[s.path].add_argument(
                f"--{kebab(s.path)}",
                dest=s.path,
                action=argparse.BooleanOptionalAction,
                help=f"switch {s.path} on (with the defaults below) or off, whatever "
                "--config says; the flags below need it on (default: off)",
            )
        if s.model is PoolConfig:
            groups[s.path].add_argument(
                f"--{s.prefix}actors",
                dest=f"{s.path}.actors",
                type=int,
                metavar="N",
                help=f"shorthand: --{s.prefix}min-actors N --{s.prefix}max-actors N",
            )
    for flag in flags:
        group = groups[flag.path.rpartition(".")[0]]
        kind, choices, repeatable = _scalar_type(flag.field.annotation)
        help_text = _help(flag.field, _shown(flag))
        if kind is bool:
            group.add_argument(
                *flag.names, dest=flag.path, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            group.add_argument(
                *flag.names,
                dest=flag.path,
                type=kind,
                choices=choices,
                action="append" if repeatable else "store",
                metavar=None if choices else flag.path.rpartition(".")[2].upper(),
                help=help_text,
            )


def read_prompts_file(path: str) -> list[str]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --prompts {path}: {exc}") from exc
    prompts = [line.strip() for line in text.splitlines()]
    prompts = [p for p in prompts if p and not p.startswith("#")]
    if not prompts:
        raise ValueError(f"--prompts {path} holds no prompt")
    return prompts


def read_job_file(path: str) -> dict[str, Any]:
    """The fields of a ``--config`` file (validated later, merged with the flags)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --config {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"--config {path} does not parse: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--config {path} must hold a mapping of JobConfig fields")
    return data


def job_config_from_args(args: argparse.Namespace) -> JobConfig:
    """The job the flags (over the ``--config`` file, if any) describe; a ``ValueError`` names
    the flag or key to fix."""
    flags, sections = walk()
    data = read_job_file(args.config) if args.config else {}
    given = {f.path: v for f in flags if (v := vars(args).get(f.path)) is not None}
    for s in sections:
        if s.model is PoolConfig and (n := vars(args).get(f"{s.path}.actors")) is not None:
            both = (f"{s.path}.min_actors", f"{s.path}.max_actors")
            if any(p in given for p in both):
                raise ValueError(f"--{s.prefix}actors sets min and max actors: give it alone")
            given.update(dict.fromkeys(both, n))
    for a, b in _EXCLUSIVE:
        if a in given and b in given:
            raise ValueError(f"{_flag_name(a, flags)} and {_flag_name(b, flags)} are exclusive")
        if a in given or b in given:
            given.setdefault(a, None)
            given.setdefault(b, None)
    if args.inputs:
        data["inputs"] = list(args.inputs)
    _set_asks(data, args)
    _set_sections(data, given, sections, flags, vars(args))
    for path, value in given.items():
        target = data
        *parents, leaf = path.split(".")
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise ValueError(f"--config: {part} must be a mapping")
        target[leaf] = value
    try:
        return JobConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(describe(exc, flags, args.config)) from None


def _set_asks(data: dict[str, Any], args: argparse.Namespace) -> None:
    """--prompt, then --prompts file lines; the default only when no ask was given at all."""
    prompts = list(args.prompt or [])
    if args.prompts:
        prompts += read_prompts_file(args.prompts)
    if prompts:
        data["prompts"] = prompts
    if args.question:
        data["questions"] = list(args.question)
        data.setdefault("prompts", [])  # questions alone: no caption prompt is added


def _set_sections(
    data: dict[str, Any],
    given: dict[str, Any],
    sections: list[Section],
    flags: list[Flag],
    values: dict[str, Any],
) -> None:
    """Switch optional sections on or off, and fill what a summary model inherits."""
    for s in sections:
        if not s.optional:
            continue
        inside = [p for p in given if p.startswith(f"{s.path}.")]
        switch = values.get(s.path) if "." not in s.path else None
        parent, _, leaf = s.path.rpartition(".")
        holder = _lookup(data, parent) if parent else data
        if switch is False:
            if inside:
                raise ValueError(f"{_flag_name(inside[0], flags)} contradicts --no-{kebab(leaf)}")
            data[s.path] = None
        elif switch or (inside and "." in s.path):
            if isinstance(holder, dict) and holder.get(leaf) is None:
                holder[leaf] = {}
        elif inside and (not isinstance(holder, dict) or holder.get(leaf) is None):
            raise ValueError(f"{_flag_name(inside[0], flags)} needs --{kebab(leaf)}")
    if "summarize.model.model" in given:
        for path, source in _INHERITED.items():
            value = given.get(source, _lookup(data, source))
            if path not in given and _lookup(data, path) is None and value is not None:
                given[path] = value


def _lookup(data: Any, path: str) -> Any:
    for part in path.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def _flag_name(path: str, flags: list[Flag]) -> str:
    return next((f.names[0] for f in flags if f.path == path), path)


def describe(exc: ValidationError, flags: list[Flag], config: str | None) -> str:
    """One line per problem, naming the field, its flag and, for unknown keys, the file."""
    lines = []
    for err in exc.errors():
        path = ".".join(str(p) for p in err["loc"]) or "job"
        flag = _flag_name(path, flags)
        where = f"{path} ({flag})" if flag != path else path
        message = err["msg"].removeprefix("Value error, ")  # a validator's own words
        if err["type"] == "extra_forbidden":
            lines.append(f"{config or 'config'}: unknown key {path!r}")
        elif err["type"] == "missing":
            hint = "INPUT" if path == "inputs" else flag
            lines.append(f"give {hint} (or `{path}` in a --config file)")
        else:
            lines.append(f"{where}: {message}")
    return "; ".join(lines)
