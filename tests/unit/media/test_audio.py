"""Audio windows for speech recognition: ranges, own ranges, samples, clock and errors."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode, MediaError
from pipelines.media import synth_audio
from pipelines.media.audio import AUDIO_RATE, iter_audio_windows

CFG = DecodeConfig()


def dominant_hz(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples))
    return float(np.argmax(spectrum) * AUDIO_RATE / len(samples))


@pytest.fixture(scope="session")
def stereo_70s(media_dir) -> str:
    """70 s of a 440 Hz tone, stereo 44.1 kHz AAC in MP4, with a video stream."""
    path = media_dir / "tone_70s.mp4"
    synth_audio.write_video_with_audio(path, tones=((70.0, 440.0),), sample_rate=44100, channels=2)
    return str(path)


def test_windows_of_70s_tile_the_track(stereo_70s):
    chunks = list(iter_audio_windows(stereo_70s, CFG, video_key="k"))
    assert [c.index for c in chunks] == [0, 1, 2]
    assert [c.video_key for c in chunks] == ["k"] * 3
    assert [c.start_s for c in chunks] == [0.0, 25.0, 50.0]
    assert chunks[0].end_s == 30.0 and chunks[1].end_s == 55.0
    # The last window is shorter and ends with the track (AAC adds < 1 frame of padding).
    assert 70.0 <= chunks[2].end_s < 70.1
    assert [(c.own_start_s, c.own_end_s) for c in chunks[:2]] == [(0.0, 27.5), (27.5, 52.5)]
    assert chunks[2].own_start_s == 52.5 and chunks[2].own_end_s == chunks[2].end_s
    for c in chunks:
        assert len(c.samples) == round((c.end_s - c.start_s) * AUDIO_RATE)
    # Own ranges: no gap, no overlap, from 0 to the end of the track.
    for a, b in zip(chunks, chunks[1:], strict=False):
        assert a.own_end_s == b.own_start_s
    assert chunks[0].own_start_s == 0.0 and chunks[-1].own_end_s == chunks[-1].end_s


def test_stereo_44k_becomes_mono_16k_and_the_tone_survives(stereo_70s):
    chunk = next(iter_audio_windows(stereo_70s, CFG))
    assert chunk.samples.dtype == np.float32 and chunk.samples.ndim == 1
    assert len(chunk.samples) == 30 * AUDIO_RATE
    assert dominant_hz(chunk.samples) == pytest.approx(440.0, abs=1.0)
    # Both channels carry the same tone at 0.5; FFmpeg's downmix weighs each by -3 dB.
    assert np.abs(chunk.samples[AUDIO_RATE:]).max() == pytest.approx(0.5 * 2**0.5, abs=0.03)


def test_windows_with_other_sizes_and_no_overlap(media_dir):
    path = media_dir / "tone_12s.mkv"
    synth_audio.write_video_with_audio(
        path, tones=((12.0, 1000.0),), audio_codec="pcm_s16le", container_format="matroska"
    )
    chunks = list(iter_audio_windows(str(path), CFG, window_s=5.0, overlap_s=0.0))
    assert [(c.start_s, c.end_s) for c in chunks] == [(0.0, 5.0), (5.0, 10.0), (10.0, 12.0)]
    assert [(c.own_start_s, c.own_end_s) for c in chunks] == [(0, 5), (5, 10), (10, 12)]
    assert all(dominant_hz(c.samples) == pytest.approx(1000.0, abs=1.0) for c in chunks)
    # A track exactly one window long is one window.
    (only,) = iter_audio_windows(str(path), CFG, window_s=12.0, overlap_s=2.0)
    assert (only.start_s, only.end_s, only.own_start_s, only.own_end_s) == (0, 12, 0, 12)


def test_times_start_at_the_video_start(media_dir):
    # Audio starts 2 s before the video: 440 Hz then, 1000 Hz from the video's first frame.
    path = media_dir / "late_video.mkv"
    synth_audio.write_video_with_audio(
        path, tones=((2.0, 440.0), (6.0, 1000.0)), video_start_s=2.0, container_format="matroska"
    )
    chunks = list(iter_audio_windows(str(path), CFG, window_s=5.0, overlap_s=1.0))
    assert chunks[0].start_s == 0.0
    assert chunks[-1].end_s == pytest.approx(6.0, abs=0.07)  # the 2 s before 0 are cut off
    assert dominant_hz(chunks[0].samples[: AUDIO_RATE // 2]) == pytest.approx(1000.0, abs=2.0)


def test_audio_that_starts_after_the_video_keeps_its_offset(media_dir):
    path = media_dir / "late_audio.mkv"
    synth_audio.write_video_with_audio(
        path, tones=((4.0, 440.0),), audio_start_s=1.5, container_format="matroska"
    )
    chunks = list(iter_audio_windows(str(path), CFG, window_s=5.0, overlap_s=1.0))
    assert len(chunks) == 1
    assert chunks[0].start_s == pytest.approx(1.5, abs=0.01)
    assert chunks[0].end_s == pytest.approx(5.5, abs=0.07)


def test_audio_only_file_uses_its_own_start(media_dir):
    path = media_dir / "speech.m4a"
    synth_audio.write_video_with_audio(
        path, tones=((3.0, 440.0),), with_video=False, container_format="mp4"
    )
    (chunk,) = iter_audio_windows(str(path), CFG)
    assert chunk.start_s == 0.0 and chunk.end_s == pytest.approx(3.0, abs=0.07)


def test_a_video_without_audio_is_no_audio_stream(cfr_25s):
    with pytest.raises(MediaError) as exc:
        next(iter_audio_windows(cfr_25s, CFG))
    assert exc.value.code == ErrorCode.NO_AUDIO_STREAM


@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("random.mp4", ErrorCode.CORRUPT),
        ("zero.mp4", ErrorCode.EMPTY),
        ("concat.avi", ErrorCode.FORBIDDEN),
    ],
)
def test_bad_files_are_typed_errors(bad_media, name, code):
    with pytest.raises(MediaError) as exc:
        list(iter_audio_windows(bad_media[name], CFG))
    assert exc.value.code == code


def test_missing_file_is_not_found(tmp_path):
    with pytest.raises(MediaError) as exc:
        list(iter_audio_windows(str(tmp_path / "nope.mp4"), CFG))
    assert exc.value.code == ErrorCode.NOT_FOUND


def test_limits_duration_and_timeout(stereo_70s):
    with pytest.raises(MediaError) as exc:
        list(iter_audio_windows(stereo_70s, DecodeConfig(max_duration_s=60)))
    assert exc.value.code == ErrorCode.TOO_LONG
    with pytest.raises(MediaError) as exc:
        list(iter_audio_windows(stereo_70s, DecodeConfig(timeout_s=1e-6)))
    assert exc.value.code == ErrorCode.DECODE_TIMEOUT


def test_the_consumer_time_does_not_count_against_the_timeout(media_dir):
    import time

    path = media_dir / "tone_12s_b.mkv"
    synth_audio.write_video_with_audio(
        path, tones=((12.0, 440.0),), audio_codec="pcm_s16le", container_format="matroska"
    )
    chunks = []
    for chunk in iter_audio_windows(
        str(path), DecodeConfig(timeout_s=0.5), window_s=5, overlap_s=1
    ):
        time.sleep(0.3)
        chunks.append(chunk)
    assert len(chunks) == 3


def test_overlap_must_be_below_half_the_window(stereo_70s):
    with pytest.raises(ValueError, match="overlap_s"):
        next(iter_audio_windows(stereo_70s, CFG, window_s=10, overlap_s=5))
