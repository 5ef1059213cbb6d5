"""The output folder's guards: one run at a time (lease), --overwrite only on vidcap
outputs, state files written whole, stale temporary files swept."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time

import pyarrow.fs as pafs
import pytest

from pipelines.core.config import JobConfig
from pipelines.core.output import Summary, sweep_tmp, write_summary
from pipelines.offline.ledger.lease import Lease, OutputLocked
from pipelines.offline.ledger.resume import RunConflict, prepare_output

FS = pafs.LocalFileSystem()


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(tmp_path):
    with Lease(FS, str(tmp_path), "first"):
        lease = json.loads((tmp_path / "_lease.json").read_text())
        assert (lease["host"], lease["pid"]) == (socket.gethostname(), os.getpid())
        with pytest.raises(OutputLocked, match=rf"pid {os.getpid()}, heartbeat \d+ s ago"):
            Lease(FS, str(tmp_path), "second").acquire()
    assert not (tmp_path / "_lease.json").exists()  # released
    with Lease(FS, str(tmp_path), "second"):
        pass


def test_a_stale_lease_is_taken_over(tmp_path):
    old = {"host": "elsewhere", "pid": 1, "session": "x", "heartbeat": time.time() - 600}
    (tmp_path / "_lease.json").write_text(json.dumps(old))
    with Lease(FS, str(tmp_path), "new", ttl_s=60):
        assert json.loads((tmp_path / "_lease.json").read_text())["session"] == "new"


def test_a_lease_of_a_dead_process_on_this_host_is_taken_over(tmp_path):
    gone = subprocess.Popen(["true"])
    gone.wait()
    lease = {
        "host": socket.gethostname(),
        "pid": gone.pid,
        "session": "x",
        "heartbeat": time.time(),
    }
    (tmp_path / "_lease.json").write_text(json.dumps(lease))
    with Lease(FS, str(tmp_path), "new"):
        pass


def test_the_heartbeat_keeps_the_lease_fresh(tmp_path):
    with Lease(FS, str(tmp_path), "a", ttl_s=0.4):
        first = json.loads((tmp_path / "_lease.json").read_text())["heartbeat"]
        time.sleep(0.5)
        assert json.loads((tmp_path / "_lease.json").read_text())["heartbeat"] > first
        with pytest.raises(OutputLocked):
            Lease(FS, str(tmp_path), "b", ttl_s=0.4).acquire()


def test_overwrite_refuses_a_folder_that_is_not_a_vidcap_output(tmp_path):
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "chapter1.tex").write_text("\\chapter{One}")
    config = JobConfig(inputs=["x"], out=str(tmp_path), overwrite=True)
    with pytest.raises(RunConflict, match=r"not a vidcap output \(it holds thesis\)"):
        prepare_output(FS, str(tmp_path), config)
    assert (tmp_path / "thesis" / "chapter1.tex").exists()
    plain = JobConfig(inputs=["x"], out=str(tmp_path))
    with pytest.raises(RunConflict, match="not a vidcap output"):
        prepare_output(FS, str(tmp_path), plain)


def test_overwrite_empties_a_vidcap_output_but_keeps_the_lease(tmp_path):
    out = str(tmp_path)
    prepare_output(FS, out, JobConfig(inputs=["x"], out=out))
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "part-a.parquet").write_bytes(b"x")
    (tmp_path / "_lease.json").write_text("{}")
    prepare_output(FS, out, JobConfig(inputs=["x"], out=out, overwrite=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["_lease.json", "run.json"]


def test_a_truncated_run_json_is_a_clear_conflict(tmp_path):
    (tmp_path / "run.json").write_text('{"run_key": "ab')
    with pytest.raises(RunConflict, match="run.json is unreadable.*--overwrite"):
        prepare_output(FS, str(tmp_path), JobConfig(inputs=["x"], out=str(tmp_path)))


def test_state_files_are_written_whole_and_stale_tmp_files_are_swept(tmp_path):
    out = str(tmp_path)
    write_summary(FS, out, Summary(rows=3))
    assert json.loads((tmp_path / "summary.json").read_text())["rows"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no tmp left behind
    prepare_output(FS, out, JobConfig(inputs=["x"], out=out))
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / ".part-x.parquet.tmp").write_bytes(b"half")
    (tmp_path / "clips" / "part-y.parquet").write_bytes(b"kept")
    prepare_output(FS, out, JobConfig(inputs=["x"], out=out))  # the next run sweeps
    assert [p.name for p in (tmp_path / "clips").iterdir()] == ["part-y.parquet"]
    assert sweep_tmp(FS, str(tmp_path / "nowhere")) == 0
