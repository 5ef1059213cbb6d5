"""Keying on the driver (no Ray): where keys are computed, the counts of what is left, and
the missing files' rows written without a Ray dataset."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.config import JobConfig
from pipelines.core.keys import KeySet, raw_keys, work_key
from pipelines.offline import keying
from pipelines.offline.inputs import default_asks, plan_inputs
from pipelines.offline.keying import key_on_driver, keys_on_driver

ASKS = default_asks(["p", "q"])


def _config(tmp_path, **kw) -> JobConfig:
    return JobConfig(inputs=["x.mp4"], out=str(tmp_path / "out"), **kw)


def _plan(paths) -> pa.Table:
    plan = plan_inputs([str(p) for p in paths], ASKS)
    return plan.append_column("order", pa.array(np.arange(plan.num_rows, dtype=np.int64)))


def test_a_small_local_stat_job_keys_on_the_driver(tmp_path):
    assert keys_on_driver(_config(tmp_path), 1000)


@pytest.mark.parametrize(
    "kw, inputs",
    [
        ({"video_key": "content"}, 10),  # reads whole files: tasks
        ({"address": "ray://head:10001"}, 10),  # a cluster: files may be on the workers only
        ({}, keying.DRIVER_KEY_MAX_ROWS + 1),  # the cluster's cores are faster
    ],
)
def test_other_jobs_key_in_ray_tasks(tmp_path, kw, inputs):
    assert not keys_on_driver(_config(tmp_path, **kw), inputs)


def test_driver_keys_count_what_is_left_and_write_missing_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(keying, "KEY_BATCH_ROWS", 3)  # several chunks from 8 inputs
    present = []
    for i in range(4):
        path = tmp_path / f"v{i}.mp4"
        path.write_bytes(b"x" * (10 + i))
        present.append(path)
    gone = [tmp_path / f"gone{i}.mp4" for i in range(4)]
    plan = _plan(present + gone)
    # An earlier run committed v1 and gone2 (a missing file's rows count as done too).
    asks = json.loads(plan.column("asks")[0].as_py())
    done = [work_key(raw_keys([str(p)])[0][0], asks) for p in (present[1], gone[2])]
    committed = KeySet(np.array([k.encode() for k in done], dtype="S32"))

    keyed = key_on_driver(_config(tmp_path), plan, committed)

    assert (keyed.todo, keyed.todo_bytes, keyed.missing) == (3, 10 + 12 + 13, 3)
    assert keyed.needs_ray  # three videos to decode
    assert [c.num_rows for c in keyed.chunks] == [3, 3, 2]
    rows = [
        (str(v), str(a), str(c))
        for b in keyed.missing_batches()
        for v, a, c in zip(b["source"], b["asks"], b["error_code"], strict=True)
    ]
    one_ask = [json.dumps([a]) for a in json.loads(plan.column("asks")[0].as_py())]
    expected = [str(gone[i]) for i in (0, 1, 3)]
    assert [(s, json.dumps(json.loads(a)), c) for s, a, c in rows] == [
        (s, a, "not_found") for s in expected for a in one_ask
    ]


def test_only_missing_files_left_needs_no_ray(tmp_path):
    plan = _plan([tmp_path / "gone0.mp4", tmp_path / "gone1.mp4"])
    keyed = key_on_driver(_config(tmp_path), plan, KeySet(np.empty(0, dtype="S32")))
    assert (keyed.todo, keyed.missing, keyed.needs_ray) == (0, 2, False)
    assert sum(len(b["video_id"]) for b in keyed.missing_batches()) == 4  # two asks each


def test_a_job_of_missing_files_and_its_rerun_never_start_ray(
    tmp_path, monkeypatch, tiny_model_dir
):
    from pipelines.offline import job

    def no_ray(config):
        raise AssertionError("this job needed no Ray")

    monkeypatch.setattr(job, "_start_ray", no_ray)
    manifest = tmp_path / "gone.csv"
    manifest.write_text("path\n" + "".join(f"gone/v{i}.mp4\n" for i in range(50)))
    config = JobConfig(
        inputs=[str(manifest)],
        out=str(tmp_path / "out"),
        prompts=["a", "b"],
        model={"model": tiny_model_dir("qwen2_vl")},
        commit_interval_s=0,
    )
    first = job.run_job(config)
    assert (first.rows, first.errors_by_code, first.processed) == (100, {"not_found": 100}, 50)
    again = job.run_job(config)
    assert (again.rows, again.skipped_done, again.processed) == (0, 50, 0)
