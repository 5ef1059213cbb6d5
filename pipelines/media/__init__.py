"""The media layer: probe, decode, chunk and sample videos with PyAV (CPU only, streaming).

Bottom up: ``open`` (what FFmpeg may open), ``frames`` (decoded frames and their clock),
``scenes`` (cuts), ``sampling`` (window and target arithmetic), ``clips`` (frames into clips),
``decode`` (the entry point); ``subtitles`` (timed text) and ``synth`` (test media) beside them.
"""

from pipelines.media.decode import DecodedClip, VideoInfo, iter_clips, probe
from pipelines.media.subtitles import Cue, cues_in, load_cues

__all__ = ["Cue", "DecodedClip", "VideoInfo", "cues_in", "iter_clips", "load_cues", "probe"]
