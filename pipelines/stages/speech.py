"""Which timed text a video has, and the part of it each clip gets (the decode half of the
video's context; ``stages.context`` puts it into the prompt).

Under ``ContextConfig.source``: the manifest's ``subtitles`` file, else a sidecar
``.srt``/``.vtt``, else a text stream in the container (``subtitles``); the speech-recognition
segments (``transcript``); the first of those the video has (``auto``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow.fs as pafs

from pipelines.core.config import ContextConfig, DecodeConfig
from pipelines.core.records import VideoTask, segments_from_json
from pipelines.media.subtitles import Cue, cues_in, load_cues, read_subtitle_file


@dataclass(frozen=True)
class VideoSpeech:
    """A video's timed text under the job's context settings, looked up once per video."""

    cues: tuple[Cue, ...]
    source: str
    """``subtitles``, ``transcript`` or '' (none found, or context off)."""
    context: str
    """The manifest's free text for the video."""

    @classmethod
    def of(
        cls,
        task: VideoTask,
        config: ContextConfig,
        decode: DecodeConfig,
        filesystem: pafs.FileSystem | None = None,
    ) -> VideoSpeech:
        if config.max_tokens == 0:
            return cls((), "", "")
        cues: Sequence[Cue] = ()
        source = ""
        if config.source in ("subtitles", "auto"):
            if task.subtitles:
                cues = read_subtitle_file(task.subtitles, filesystem)
            else:
                cues = load_cues(task.source, filesystem, decode)
            source = "subtitles" if cues else ""
        if not cues and config.source in ("transcript", "auto") and task.transcript:
            cues = [Cue(s.start_s, s.end_s, s.text) for s in segments_from_json(task.transcript)]
            source = "transcript" if cues else ""
        return cls(tuple(sorted(cues)), source, task.context if config.source != "none" else "")

    def for_clip(self, start_s: float, end_s: float) -> tuple[str, str]:
        """(the clip's speech, where the clip's context comes from)."""
        speech = cues_in(self.cues, start_s, end_s) if self.cues else ""
        sources = [s for s, text in ((self.source, speech), ("manifest", self.context)) if text]
        return speech, ",".join(sources)
