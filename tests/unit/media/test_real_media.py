"""Every file of the shared hard-case testset decodes, or fails with its documented code.

The testset lives beside the checkout (``../shared/media/testset``); users don't have it, so
these tests skip when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipelines.core.errors import MediaError
from pipelines.media import decode
from tests.unit.media.qwen_defaults import qwen_decode

TESTSET = Path(__file__).resolve().parents[3].parent / "shared" / "media" / "testset"
FILES = (
    sorted(p.name for p in TESTSET.iterdir() if p.name != "MANIFEST.tsv")
    if TESTSET.is_dir()
    else []
)

# Files whose last clip is cut short because the file itself is truncated.
PARTIAL = {"hachoir__breakdance.flv"}  # header says 46.9 s, ~1.9 s is there
# Files that are refused, with the code they get. Empty: all 20 decode with PyAV 18.
EXPECTED_ERRORS: dict[str, str] = {}
# Upright size (height > width) for the portrait and rotated ones.
PORTRAIT = {
    "decord__video_90.mov",
    "androidx-media__sample_edit_list.mp4",
    "androidx-media__hdr10-av1.mp4",
}

pytestmark = pytest.mark.skipif(not FILES, reason=f"{TESTSET} not present")


@pytest.mark.parametrize("name", FILES)
def test_testset_file_decodes_or_gives_its_code(name):
    cfg = qwen_decode()
    path = str(TESTSET / name)
    if name in EXPECTED_ERRORS:
        with pytest.raises(MediaError) as info:
            list(decode.iter_clips(path, cfg))
        assert info.value.code.value == EXPECTED_ERRORS[name]
        return
    clips = list(decode.iter_clips(path, cfg))
    assert clips, name
    assert [c.clip_index for c in clips] == list(range(len(clips)))
    assert [c.partial for c in clips][-1] == (name in PARTIAL)
    for clip in clips:
        n, height, width, channels = clip.frames.shape
        assert clip.frames.dtype == np.uint8 and channels == 3
        assert n == len(clip.frame_ts_s) and n % cfg.frame_factor == 0
        assert cfg.min_frames <= n <= cfg.max_frames
        assert max(height, width) <= cfg.max_side_px
        assert list(clip.frame_ts_s) == sorted(clip.frame_ts_s)
        assert (height > width) == (name in PORTRAIT)


@pytest.mark.skipif("panda3d__PandaSneezes.ogv" not in FILES, reason="file absent")
def test_theora_with_empty_packets_decodes_to_the_end():
    # container.decode() stops after ~13 frames on this file; the demux loop must not.
    clips = list(decode.iter_clips(str(TESTSET / "panda3d__PandaSneezes.ogv"), qwen_decode()))
    assert clips[-1].end_s == pytest.approx(14.0)
    assert clips[-1].frame_ts_s[-1] > 13.0


CORPUS = TESTSET.parent / "corpus"
# Packed MPEG-4 in AVI: frame times come out of order, so skipping must fall back to a full decode.
OUT_OF_ORDER = ["mmaction2__test.avi", "mmaction2__S001C001P001R001A001_rgb.avi"]


@pytest.mark.parametrize("name", OUT_OF_ORDER)
def test_skipping_never_changes_picks_on_out_of_order_times(name):
    path = CORPUS / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    skipping = list(decode.iter_clips(str(path), qwen_decode(max_side_px=64)))
    full = list(decode.iter_clips(str(path), qwen_decode(max_side_px=64, nonref_margin_s=0.0)))
    assert [c.frame_ts_s for c in skipping] == [c.frame_ts_s for c in full]
    assert all(np.array_equal(a.frames, b.frames) for a, b in zip(skipping, full, strict=True))
