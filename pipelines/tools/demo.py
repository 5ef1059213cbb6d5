"""Sample inputs for ``vidcap demo``: a few synthetic videos plus one broken file.

The broken file is there on purpose: the demo shows that bad input becomes a typed error
row while the rest of the job succeeds. One video comes with a sidecar ``.srt`` (its cues
reach the prompts of the clips they overlap) and one with an audio track (transcribed by
the speech-recognition pass, whose transcript then reaches the prompts the same way).
"""

from __future__ import annotations

from pathlib import Path

from pipelines.media.synth import write_random_bytes, write_video
from pipelines.media.synth_audio import write_video_with_audio

DEMO_SRT = """1
00:00:00,500 --> 00:00:03,000
A square starts to move.

2
00:00:06,000 --> 00:00:09,000
It keeps moving to the right.
"""


def write_demo_videos(folder: str | Path) -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    specs = [
        ("moving-square-12s.mp4", dict(seconds=12.0, fps=24.0, width=160, height=120)),
        ("moving-square-5s.mp4", dict(seconds=5.0, fps=30.0, width=128, height=96)),
        (
            "counter-8s.webm",
            dict(seconds=8.0, fps=15.0, width=96, height=96, codec="libvpx-vp9", pattern="index"),
        ),
    ]
    paths = []
    for name, kwargs in specs:
        path = folder / name
        write_video(path, **{"pattern": "moving", **kwargs})
        paths.append(path)
    (folder / "moving-square-12s.srt").write_text(DEMO_SRT)  # a sidecar: found by name
    with_audio = folder / "tones-6s.mp4"
    write_video_with_audio(with_audio, tones=((3.0, 440.0), (3.0, 660.0)), width=96, height=64)
    paths.append(with_audio)
    broken = folder / "not-really-a-video.mp4"
    write_random_bytes(broken)
    paths.append(broken)
    return paths
