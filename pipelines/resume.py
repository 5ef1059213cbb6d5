"""What makes a rerun of the same command finish the job exactly once.

- ``run.json`` pins the settings that change a row's text. Rerunning with the same ``--out``
  and different settings is refused (use ``--overwrite`` or another ``--out``) rather than
  silently mixing two runs in one dataset.
- Committed shards are the ledger of finished videos (see ``output.ShardWriter``).
- The journal records the row keys the LM stage finished, one small file per batch, so a
  rerun can count the *rework*: clips captioned again because an interruption lost them
  between the LM and a commit. Journal and attempt marks are removed when a run completes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pyarrow.fs as pafs

from pipelines.config import JobConfig
from pipelines.keys import row_key, run_key
from pipelines.output import SCHEMA_VERSION
from pipelines.records import asks_from_json


class RunConflict(ValueError):
    """The output folder holds a run with other settings."""


def run_settings(config: JobConfig) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "model": config.model.model,
        "revision": config.model.revision,
        "prompts": config.prompts,
        "questions": config.questions,
        "decode": config.decode.model_dump(),
        "generation": config.generation.model_dump(),
    }


def prepare_output(fs: pafs.FileSystem, out: str, config: JobConfig) -> str:
    """Create or check ``out``; return the run key."""
    settings = run_settings(config)
    key = run_key(settings)
    marker = f"{out}/run.json"
    exists = fs.get_file_info(out).type == pafs.FileType.Directory
    if exists and config.overwrite:
        fs.delete_dir_contents(out)
    elif fs.get_file_info(marker).type == pafs.FileType.File:
        with fs.open_input_stream(marker) as f:
            previous = json.loads(f.read())
        if previous.get("run_key") != key:
            changed = sorted(
                k for k in settings if previous.get("settings", {}).get(k) != settings[k]
            )
            raise RunConflict(
                f"{out} holds a run with different settings ({', '.join(changed)}); "
                "pass --overwrite to start clean, or choose another --out"
            )
        return key
    fs.create_dir(out, recursive=True)
    with fs.open_output_stream(marker) as f:
        f.write(json.dumps({"run_key": key, "settings": settings}, indent=2).encode())
    return key


class Journal:
    """Row keys finished by the LM stage; called inside the LM actors (picklable)."""

    def __init__(self, out_uri: str, out: str, session: str, run: str) -> None:
        self.out_uri, self.dir, self.run = out_uri, f"{out}/_journal/{session}", run
        self._fs: pafs.FileSystem | None = None

    def __call__(self, rows: list[dict]) -> None:
        if self._fs is None:
            from pipelines.inputs import filesystem_for

            self._fs = filesystem_for(self.out_uri)[0]
            self._fs.create_dir(self.dir, recursive=True)
        keys = []
        for r in rows:
            if not r["error_code"]:
                (ask,) = asks_from_json(str(r["asks"]))
                clip = int(r["clip_index"])
                keys.append(row_key(r["video_key"], clip, ask.index, ask.text, self.run))
        if keys:
            with self._fs.open_output_stream(f"{self.dir}/{uuid.uuid4().hex}.txt") as f:
                f.write("\n".join(keys).encode())


def journaled_keys(fs: pafs.FileSystem, out: str) -> set[str]:
    keys: set[str] = set()
    selector = pafs.FileSelector(f"{out}/_journal", recursive=True, allow_not_found=True)
    for info in fs.get_file_info(selector):
        if info.type == pafs.FileType.File:
            with fs.open_input_stream(info.path) as f:
                keys.update(f.read().decode().split())
    return keys


def clear_scratch(fs: pafs.FileSystem, out: str) -> None:
    """Remove journal and attempt marks once every input is committed."""
    for name in ("_journal", "_attempts"):
        path = f"{out}/{name}"
        if fs.get_file_info(path).type == pafs.FileType.Directory:
            fs.delete_dir(path)
