"""Work units: keys in batches, the resume filter, units by count and bytes, and a unit
that splits around its poison video (decode stage called directly, no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.config import DecodeConfig
from pipelines.core.errors import ErrorCode
from pipelines.core.keys import KeySet, as_fixed, raw_keys, video_keys, work_key
from pipelines.core.records import FailedClip, VideoTask, asks_to_json
from pipelines.media import synth
from pipelines.offline.inputs import default_asks, plan_inputs
from pipelines.offline.ledger.attempts import AttemptLog
from pipelines.offline.ledger.stall import MonitorState
from pipelines.offline.work_units import (
    KeyStep,
    duplicate_inputs,
    missing_rows,
    todo_rows,
    unit_videos,
)
from pipelines.stages.decode import DecodeStage

ASKS = default_asks(["p"])


def _plan(paths) -> pa.Table:
    plan = plan_inputs([str(p) for p in paths], ASKS)
    return plan.append_column("order", pa.array(np.arange(plan.num_rows, dtype=np.int64)))


def test_key_step_marks_missing_and_committed_inputs(tmp_path):
    here = tmp_path / "here.mp4"
    here.write_bytes(b"x" * 10)
    plan = _plan([here, tmp_path / "gone.mp4", tmp_path / "done.mp4"])
    (tmp_path / "done.mp4").write_bytes(b"y")
    raw = raw_keys([str(tmp_path / "done.mp4")])[0][0]
    done_key = work_key(raw, json.loads(plan.column("asks")[2].as_py()))
    committed = KeySet(np.array([done_key.encode()], dtype="S32"))
    keyed = KeyStep("stat", None)(plan)
    assert keyed.column("missing").to_pylist() == [False, True, False]
    assert keyed.column("size").to_pylist() == [10, 0, 1]
    assert committed.contains(as_fixed(keyed.column("video_key"))).tolist() == [
        False,
        False,
        True,
    ]
    # Keys equal the one-by-one computation, so a rerun matches earlier runs exactly.
    sources = plan.column("source").to_pylist()
    assert keyed.column("input_key").to_pylist() == video_keys(sources)


def test_only_undone_present_videos_are_decoded_and_missing_ones_become_rows():
    n = 5
    keyed = pa.table(
        {
            "video_id": [f"v{i}" for i in range(n)],
            "source": [f"/v{i}.mp4" for i in range(n)],
            "asks": [asks_to_json(ASKS)] * n,
            "order": list(range(n)),
            "input_key": ["0" * 32] * n,
            "video_key": [f"{i:032x}" for i in range(n)],
            "size": [100] * n,
            "missing": [False, False, True, True, False],
            "done": [False, True, False, True, False],
            "subtitles": [""] * n,
            "context": [""] * n,
        }
    )
    assert todo_rows(keyed).column("video_id").to_pylist() == ["v0", "v4"]
    # A patched key (content duplicates) can turn a row back into work.
    patched = todo_rows(keyed, {1: ("f" * 32, False)})
    assert patched.column("video_key").to_pylist() == [f"{0:032x}", "f" * 32, f"{4:032x}"]
    lost = missing_rows(keyed)
    assert [str(c) for c in lost["error_code"]] == ["not_found"]  # v3 was committed before
    assert [str(v) for v in lost["video_id"]] == ["v2"]
    assert bool(lost["last"][0]) and int(lost["video_rows"][0]) == 1


@pytest.mark.parametrize(
    ("todo", "todo_bytes", "cpus", "expected"),
    [
        (1_000_000, 10**12, 64, 4),  # 1 MB videos: the bytes budget (4 MB here) decides
        (1_000_000, 10**9, 64, 32),  # tiny videos: the count cap decides
        (100, 10**6, 8, 2),  # a small corpus: ~8 units per CPU
        (3, 10**6, 8, 1),
    ],
)
def test_unit_size_follows_count_bytes_and_cpus(todo, todo_bytes, cpus, expected):
    assert unit_videos(todo, todo_bytes, cpus, max_videos=32, max_bytes=4 * 10**6) == expected


def test_a_unit_splits_around_its_poison_video(tmp_path):
    """A worker death charges only the video in progress; the retry quarantines it after
    ``max_attempts`` deaths and finishes every other video of the unit."""
    paths = []
    for name in ("a", "poison", "c"):
        synth.write_video(tmp_path / f"{name}.mp4", seconds=1.0, fps=4.0, width=32, height=32)
        paths.append(str(tmp_path / f"{name}.mp4"))
    tasks = [VideoTask(f"id-{i}", p, ASKS, video_key=f"{i:032x}") for i, p in enumerate(paths)]
    monitor = MonitorState()
    stage = DecodeStage(DecodeConfig(), attempts=AttemptLog(monitor), max_attempts=2)

    def run_unit() -> dict[str, list] | None:
        """The unit as one task runs it; None when the worker 'dies' on the poison video
        (it stops right after the stage said which video it is working on)."""
        stage.begin_unit(tasks)
        outputs: dict[str, list] = {}
        for task in tasks:
            outs = stage.iter_outputs(task)
            first = next(outs)
            if "poison" in task.source and not isinstance(first, FailedClip):
                return None
            outputs[task.video_id] = [first, *outs]
        stage.end_unit()
        return outputs

    assert run_unit() is None and run_unit() is None  # two deaths, both on the poison
    final = run_unit()
    assert final is not None and monitor.retry_count() == 2
    (poison,) = final["id-1"]
    assert isinstance(poison, FailedClip)
    assert (poison.ref.clip_index, poison.error.code) == (-1, ErrorCode.WORKER_CRASH)
    assert "quarantined after 2 attempts" in poison.error.message
    for vid in ("id-0", "id-2"):
        assert [type(c).__name__ for c in final[vid]] == ["Clip"]
        assert final[vid][0].ref.attempt == 3  # replaces what the dead attempts sent
    assert set(monitor.deaths) == {tasks[1].video_key}


def test_duplicate_inputs_are_found_in_plan_order():
    orders = np.array([3, 0, 1, 2])
    keys = np.array([b"k1", b"k1", b"k2", b"k1"], dtype="S32")
    # order 0 is the first k1; orders 2 and 3 (positions 3 and 0) repeat it.
    assert sorted(orders[duplicate_inputs(orders, keys)].tolist()) == [2, 3]


@pytest.mark.parametrize("n", [0, 1, 100_000])
def test_keyset_membership_is_exact(n):
    rng = np.random.default_rng(0)
    keys = np.array([f"{x:032x}".encode() for x in rng.integers(0, 2**62, n)], dtype="S32")
    ks = KeySet(keys)
    probe = np.concatenate([keys[:1000], np.array([b"f" * 32, b"0" * 32], dtype="S32")])
    expected = [True] * min(n, 1000) + [False, False]
    assert ks.contains(probe).tolist() == expected
    assert len(ks) == len(set(keys.tolist()))
