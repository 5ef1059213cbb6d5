"""The LM actors' journal: a file per flush interval (not per row or per batch), read back
exactly by the next run."""

from __future__ import annotations

import pyarrow.fs as pafs

from pipelines.core.records import Ask, asks_to_json
from pipelines.offline.ledger.resume import Journal, journaled_keys


def _rows(video: int, clips: int) -> list[dict]:
    return [
        {
            "error_code": "",
            "asks": asks_to_json((Ask("Describe."),)),
            "clip_index": c,
            "video_key": f"{video:032x}",
        }
        for c in range(clips)
    ]


def test_journal_writes_once_per_interval_and_the_next_run_reads_every_key(tmp_path):
    out = str(tmp_path / "out")
    journal = Journal(out, out, "s1", "r" * 32, flush_every_s=3600)
    for video in range(200):  # 200 batches inside one interval
        journal(_rows(video, clips=3))
    files = list((tmp_path / "out" / "_journal" / "s1").iterdir())
    assert len(files) == 1  # the first batch opens the interval; the rest wait for it
    journal(_rows(200, clips=1) + [{**_rows(201, 1)[0], "error_code": "corrupt"}])
    journal.flush()
    assert len(list((tmp_path / "out" / "_journal" / "s1").iterdir())) == 2
    keys = journaled_keys(pafs.LocalFileSystem(), out)
    assert len(keys) == 200 * 3 + 1  # error rows are not journaled: no LM work to redo
