"""The media layer: probe, decode, chunk and sample videos with PyAV (CPU only, streaming)."""

from pipelines.media.decode import DecodedClip, VideoInfo, iter_clips, probe
from pipelines.media.subtitles import Cue, cues_in, load_cues

__all__ = ["Cue", "DecodedClip", "VideoInfo", "cues_in", "iter_clips", "load_cues", "probe"]
