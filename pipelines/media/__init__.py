"""The media layer: probe, decode, chunk and sample videos with PyAV (CPU only, streaming)."""

from pipelines.media.decode import DecodedClip, VideoInfo, iter_clips, probe

__all__ = ["DecodedClip", "VideoInfo", "iter_clips", "probe"]
