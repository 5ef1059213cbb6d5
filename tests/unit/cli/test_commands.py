"""The CLI's shape: one module per command, nothing below the CLI imports it, help lists what
the code supports."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import build_parser, main
from pipelines.cli import submit as submit_cmd
from pipelines.core.usage import UsageError

ROOT = Path(__file__).parents[3]


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_nothing_below_the_cli_imports_it():
    below = [
        p for p in (ROOT / "pipelines").rglob("*.py") if "cli" not in p.relative_to(ROOT).parts
    ]
    offenders = [
        str(p.relative_to(ROOT))
        for p in below
        if any(n == "pipelines.cli" or n.startswith("pipelines.cli.") for n in _imports(p))
    ]
    assert offenders == []


def test_report_and_subtitles_use_only_public_media_functions():
    for path in (ROOT / "pipelines/tools/report_figures.py", ROOT / "pipelines/media/subtitles.py"):
        tree = ast.parse(path.read_text())
        private = [
            f"{node.module}.{a.name}"
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipelines.")
            for a in node.names
            if a.name.startswith("_")
        ]
        private += [
            f"{node.value.id}.{node.attr}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in {"decode", "frames", "media_open", "sampling", "clips"}
            and node.attr.startswith("_")
        ]
        assert private == [], path.name


def test_building_the_parser_imports_neither_torch_nor_ray():
    code = (
        "import sys; from pipelines.cli import build_parser; build_parser(); "
        "print(sorted(m for m in ('torch', 'ray', 'transformers') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


def test_tiny_model_help_lists_the_families(capsys):
    from pipelines.models.tiny import tiny_families

    with pytest.raises(SystemExit) as exc:
        main(["tiny-model", "--help"])
    assert exc.value.code == 0
    out = "".join(capsys.readouterr().out.split())  # help wraps lines, even inside names
    families = tiny_families()
    assert "qwen2_vl" in families
    assert f"oneof:{','.join(families)}(default:qwen2_vl)" in out


def test_tiny_model_refuses_an_unknown_family_before_building(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["tiny-model", "--family", "no_such_family", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "invalid choice: 'no_such_family'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_every_command_is_there():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {
        "caption", "tiny-model", "serve", "demo", "submit", "jobs", "report", "export",
    }  # fmt: skip


def test_submit_refuses_a_local_job_file(tmp_path):
    job = tmp_path / "job.yaml"
    job.write_text("inputs: [s3://b/in/]\nout: s3://b/out\n")
    with pytest.raises(UsageError, match="not on the cluster"):
        submit_cmd.split_command(["caption", "--config", str(job)])


def test_report_counts_must_not_be_negative(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["report", str(tmp_path), "--max-videos", "-1"])
    assert exc.value.code == 2
    assert "must be 0 or more" in capsys.readouterr().err


def test_the_program_leaves_with_the_commands_code_and_all_of_its_output(tmp_path, tiny_model_dir):
    # `run` ends with os._exit: what the command printed into a pipe must still arrive, and
    # the exit code must be the command's (1: error rows with --fail-on-error).
    gone = [str(tmp_path / f"gone-{i}.mp4") for i in range(3)]
    proc = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "caption", *gone, "--out", str(tmp_path / "o")]
        + ["--model", tiny_model_dir("qwen2_vl"), "--fail-on-error"],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "RAY_ADDRESS": ""},
    )
    assert proc.returncode == 1, proc.stderr
    summary = dict(line.strip().rsplit(None, 1) for line in proc.stdout.splitlines())
    assert (summary["inputs"], summary["error rows"], summary["not_found"]) == ("3", "3", "3")
    # The last line is the last thing printed: nothing was cut off.
    assert summary["clips dataset"] == str(tmp_path / "o" / "clips")
