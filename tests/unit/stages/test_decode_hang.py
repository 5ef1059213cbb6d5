"""The decode stage's guard against a decoder call that never returns: one thread per
process, and a worker that ends (recording why) once a call runs past its limit."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from pipelines.core.config import DecodeConfig
from pipelines.core.records import Ask, Clip, VideoTask
from pipelines.media import synth
from pipelines.stages.decode import DecodeStage


def test_one_guard_thread_serves_every_video_and_every_copy_of_the_stage(tmp_path):
    paths = []
    for i in range(6):
        paths.append(tmp_path / f"v{i}.mp4")
        synth.write_video(paths[-1], seconds=1.0, fps=4.0)
    clips = []
    for path in paths:  # a fresh stage per video, as Ray unpickles one per task
        stage = DecodeStage(DecodeConfig(clip_s=1.0, fps=None, num_frames=2))
        clips += stage.iter_outputs(VideoTask(path.stem, str(path), (Ask("Describe."),)))
    assert [type(c) for c in clips] == [Clip] * 6
    assert [t.name for t in threading.enumerate()].count("decode-hang") == 1


def test_a_call_past_its_limit_ends_the_worker_and_says_why(tmp_path):
    said = tmp_path / "reason"
    code = textwrap.dedent(
        f"""
        import time
        from pipelines.stages.decode import _HANG_WATCH

        class Ledger:
            def reason(self, why):
                open({str(said)!r}, "w").write(why)

        with _HANG_WATCH.busy(0.5, Ledger()):
            time.sleep(0.2)  # within the limit
        with _HANG_WATCH.busy(0.5, Ledger()):
            time.sleep(30)  # stuck: the guard ends the process
        print("not reached")
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (proc.returncode, proc.stdout, said.read_text()) == (1, "", "timeout")
