"""`vidcap submit` rules that need no cluster: outputs, forwarded arguments, auth, packaging."""

from __future__ import annotations

import shlex
import zipfile
from pathlib import Path

import pytest

from pipelines.cli import UsageError, main
from pipelines.cli import submit as submit_cmd
from pipelines.tools import submit

ROOT = Path(__file__).parents[3]


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("http://127.0.0.1:8265", True),
        ("http://localhost:8265", True),
        ("http://[::1]:8265", True),
        ("127.0.0.1:8265", True),
        ("http://10.0.0.5:8265", False),
        ("https://head.example.com", False),
        ("http://0.0.0.0:8265", False),
    ],
)
def test_loopback_addresses(address, loopback):
    assert submit.is_loopback_address(address) is loopback


@pytest.mark.parametrize("out", ["/data/captions", "captions", "file:///data/captions"])
def test_local_out_is_refused_on_a_remote_cluster_and_says_why(out):
    with pytest.raises(UsageError, match="head node") as exc:
        submit.check_output(out, "http://10.0.0.5:8265", out_is_shared=False)
    assert "s3://" in str(exc.value) and "--out-is-shared" in str(exc.value)


@pytest.mark.parametrize("out", ["s3://bucket/captions", "gs://bucket/captions"])
def test_object_storage_out_is_fine_anywhere(out):
    submit.check_output(out, "http://10.0.0.5:8265", out_is_shared=False)


def test_local_out_is_fine_on_a_loopback_cluster():
    submit.check_output("/tmp/captions", "http://127.0.0.1:8265", out_is_shared=False)


def test_shared_mount_must_be_spelled_as_a_file_uri():
    submit.check_output("file:///mnt/nfs/out", "http://10.0.0.5:8265", out_is_shared=True)
    with pytest.raises(UsageError, match="file://"):
        submit.check_output("/mnt/nfs/out", "http://10.0.0.5:8265", out_is_shared=True)


def test_submit_refuses_a_local_out_before_contacting_anything(capsys):
    code = main(
        ["submit", "--address", "http://10.0.0.5:1", "--", "caption", "x.mp4", "--out", "/o"]
    )
    assert code == 2
    assert "remote cluster" in capsys.readouterr().err


def test_forwarded_command_must_be_caption_without_address():
    with pytest.raises(UsageError, match="caption"):
        submit_cmd.split_command(["--", "demo"])
    with pytest.raises(UsageError, match="drop --address"):
        submit_cmd.split_command(["caption", "a.mp4", "--out", "s3://b/o", "--address", "auto"])
    with pytest.raises(UsageError, match="exclusive"):
        submit_cmd.split_command(
            ["caption", "a.mp4", "--out", "s3://b/o", "--fps", "1", "--num-frames", "4"]
        )


def test_entrypoint_runs_the_shipped_source_on_its_own_cluster():
    command, args = submit_cmd.split_command(
        ["--", "caption", "s3://b/in/", "--out", "s3://b/out", "--prompt", "What's here?"]
    )
    assert args.out == "s3://b/out"
    argv = shlex.split(submit.entrypoint(command))
    assert argv[:3] == ["python", "-m", "pipelines.cli"]
    assert argv[3:] == [*command, "--address", "auto"]
    assert "What's here?" in argv  # quoted for the shell, one argument


def test_a_local_prompts_file_travels_as_prompts(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("List the objects.\n# skipped\nWhich colours?\n")
    command, _ = submit_cmd.split_command(
        ["caption", "s3://b/in/", "--prompts", str(prompts), "--out", "s3://b/o", "--prompt", "A"]
    )
    assert command == [
        "caption", "s3://b/in/", "--out", "s3://b/o", "--prompt", "A",
        "--prompt", "List the objects.", "--prompt", "Which colours?",
    ]  # fmt: skip


def test_auth_header_only_for_an_explicit_token(tmp_path):
    assert submit.auth_headers({}) == {}
    assert submit.auth_headers({"RAY_AUTH_TOKEN": "abc"}) == {"Authorization": "Bearer abc"}
    token_file = tmp_path / "token"
    token_file.write_text("xyz\n")
    assert submit.auth_headers({"RAY_AUTH_TOKEN_PATH": str(token_file)}) == {
        "Authorization": "Bearer xyz"
    }
    # Under RAY_AUTH_MODE=token Ray's own client loads the token (same sources).
    assert submit.auth_headers({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "abc"}) == {}
    with pytest.raises(submit.ClusterError, match="cannot be read"):
        submit.auth_headers({"RAY_AUTH_TOKEN_PATH": str(tmp_path / "missing")})


def test_working_dir_ships_the_source_not_the_venv_tests_or_data(tmp_path):
    from ray._private.runtime_env.packaging import create_package

    env = submit.runtime_env(ROOT, {"HF_HOME": "/cache"})
    assert env["env_vars"] == {"HF_HOME": "/cache"} and "pip" not in env
    zip_path = tmp_path / "pkg.zip"
    create_package(str(ROOT), zip_path, include_gitignore=True, excludes=env["excludes"])
    names = zipfile.ZipFile(zip_path).namelist()
    tops = {n.split("/")[0] for n in names}
    assert {"pipelines", "serve", "pyproject.toml"} <= tops
    assert not tops & {".venv", ".git", "tests", "vidcap.egg-info"}
    assert not [n for n in names if "__pycache__" in n or n.endswith((".mp4", ".parquet"))]
    assert zip_path.stat().st_size < 20 * 1024**2
