"""Synthetic media, written once per test session with ``pipelines.media.synth``."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.media import synth


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def cfr_25s(media_dir) -> str:
    """25 s at 10 fps, H.264 in MP4: frame i at i/10 s."""
    path = media_dir / "cfr_25s.mp4"
    synth.write_video(path, seconds=25, fps=10)
    return str(path)


@pytest.fixture(scope="session")
def vfr_mkv(media_dir) -> tuple[str, tuple[float, ...]]:
    """Seven frames at irregular times; returns (path, frame times)."""
    pts = (0.0, 0.05, 0.5, 1.3, 1.31, 2.0, 3.7)
    path = media_dir / "vfr.mkv"
    synth.write_video(path, vfr_pts=pts, fps=10)
    return str(path), pts


@pytest.fixture(scope="session")
def rotated_mp4(media_dir) -> str:
    """64x32 stored, display matrix -90 (clockwise): upright it is 32 wide, 64 tall."""
    path = media_dir / "rotated.mp4"
    synth.write_video(path, seconds=1, fps=10, width=64, height=32, rotation_deg=-90)
    return str(path)


@pytest.fixture(scope="session")
def big_frame_mp4(media_dir) -> str:
    path = media_dir / "big.mp4"
    synth.write_video(path, seconds=1, fps=4, width=320, height=160)
    return str(path)


@pytest.fixture(scope="session")
def bad_media(media_dir) -> dict[str, str]:
    """One file per file-level error path, by name."""
    d = media_dir / "bad"
    d.mkdir()
    paths = {
        name: str(d / name)
        for name in (
            "zero.mp4",
            "random.mp4",
            "audio_only.mp4",
            "png.mp4",
            "unsupported.avi",
            "truncated_moov_at_end.mp4",
            "secret.mp4",
            "concat.avi",
            "hls.avi",
        )
    }
    synth.write_zero_bytes(paths["zero.mp4"])
    synth.write_random_bytes(paths["random.mp4"])
    synth.write_audio_only(paths["audio_only.mp4"])
    synth.write_png_as_mp4(paths["png.mp4"])
    synth.write_unsupported_codec(paths["unsupported.avi"])
    full = str(d / "full.mp4")
    synth.write_video(full, seconds=4, fps=10)
    synth.write_truncated(full, paths["truncated_moov_at_end.mp4"])
    synth.write_video(paths["secret.mp4"], seconds=1, fps=10)
    synth.write_disguised_playlist(paths["concat.avi"], "secret.mp4", kind="ffconcat")
    synth.write_disguised_playlist(paths["hls.avi"], "secret.mp4", kind="hls")
    return paths


@pytest.fixture(scope="session")
def truncated_mkv(media_dir) -> str:
    """A 10 s MKV cut at half its bytes; the header still declares 10 s."""
    full = media_dir / "full.mkv"
    synth.write_video(full, seconds=10, fps=10)
    path = media_dir / "truncated.mkv"
    synth.write_truncated(full, path, 0.5)
    return str(path)
