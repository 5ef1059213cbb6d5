from __future__ import annotations

import base64
import os

import pytest

from pipelines.core.errors import ErrorCode
from serve.config import SecurityConfig
from serve.fetch import FetchError
from serve.media import load_media


@pytest.fixture
def media_dir(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "ok.mp4").write_bytes(b"video")
    (tmp_path / "secret.txt").write_bytes(b"secret")
    os.symlink(tmp_path / "secret.txt", root / "link.mp4")
    return root


def test_data_url_roundtrip_and_errors():
    sec = SecurityConfig(max_body_bytes=2048)
    data = b"\x00\x01video"
    assert load_media("data:video/mp4;base64," + base64.b64encode(data).decode(), sec) == data
    with pytest.raises(FetchError) as e:
        load_media("data:video/mp4;base64,***", sec)
    assert e.value.code is ErrorCode.INVALID_REQUEST
    with pytest.raises(FetchError) as e:
        load_media("data:video/mp4;base64," + "A" * 4000, sec)
    assert e.value.status == 413


def test_local_paths_only_under_media_dir(media_dir):
    sec = SecurityConfig(media_dir=str(media_dir))
    assert load_media("ok.mp4", sec) == b"video"
    assert load_media(f"file://{media_dir}/ok.mp4", sec) == b"video"
    for escape in (
        "../secret.txt",
        f"{media_dir}/../secret.txt",
        "link.mp4",
        f"file://{media_dir}/../secret.txt",
        "/etc/passwd",
    ):
        with pytest.raises(FetchError) as e:
            load_media(escape, sec)
        assert e.value.code is ErrorCode.FORBIDDEN, escape


def test_local_paths_refused_without_media_dir(media_dir):
    with pytest.raises(FetchError) as e:
        load_media(str(media_dir / "ok.mp4"), SecurityConfig())
    assert e.value.code is ErrorCode.FORBIDDEN
