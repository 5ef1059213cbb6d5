"""What makes a rerun of the same command finish the job exactly once.

- ``run.json`` pins the settings that change a row's text. Rerunning with the same ``--out``
  and different settings is refused (use ``--overwrite`` or another ``--out``) rather than
  silently mixing two runs in one dataset.
- Committed shards are the ledger of finished videos (see ``output.ShardWriter``).
- The journal records the row keys the LM stage finished, so a rerun can count the
  *rework*: clips captioned again because an interruption lost them between the LM and a
  commit. Each LM actor writes one file per commit interval (not per batch or video), so
  the journal grows with time, not with the corpus; what the last interval of a killed
  actor held goes uncounted, as at most one commit interval of work can be lost anyway.
  The journal is removed when a run completes.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pyarrow.fs as pafs

from pipelines.core.config import JobConfig
from pipelines.core.keys import row_key, run_key
from pipelines.core.output import SCHEMA_VERSION, sweep_tmp, write_atomic
from pipelines.core.records import asks_from_json


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
        "context": config.context.model_dump(),
        "asr": config.asr.model_dump() if config.asr is not None else None,
    }


# What a vidcap output folder may hold; ``--overwrite`` empties only such a folder.
OUTPUT_ENTRIES = frozenset(
    {
        "run.json",
        "summary.json",
        "clips",
        "videos",
        "_journal",
        "_attempts",
        "_lease.json",
        "report.html",
        "export",
    }
)


def prepare_output(fs: pafs.FileSystem, out: str, config: JobConfig) -> str:
    """Create or check ``out``; return the run key. Call it holding the folder's lease."""
    settings = run_settings(config)
    key = run_key(settings)
    marker = f"{out}/run.json"
    exists = fs.get_file_info(out).type == pafs.FileType.Directory
    if exists and config.overwrite:
        _refuse_foreign(fs, out)
        for info in fs.get_file_info(pafs.FileSelector(out)):
            if info.base_name == "_lease.json":
                continue  # ours: this run holds it
            if info.type == pafs.FileType.Directory:
                fs.delete_dir(info.path)
            else:
                fs.delete_file(info.path)
    elif fs.get_file_info(marker).type == pafs.FileType.File:
        with fs.open_input_stream(marker) as f:
            try:
                previous = json.loads(f.read())
            except ValueError as exc:
                raise RunConflict(
                    f"{marker} is unreadable ({exc}); pass --overwrite to start clean"
                ) from exc
        for folder in ("clips", "videos"):
            sweep_tmp(fs, f"{out}/{folder}")
        if previous.get("run_key") != key:
            changed = sorted(
                k for k in settings if previous.get("settings", {}).get(k) != settings[k]
            )
            raise RunConflict(
                f"{out} holds a run with different settings ({', '.join(changed)}); "
                "pass --overwrite to start clean, or choose another --out"
            )
        return key
    else:
        _refuse_foreign(fs, out)
    fs.create_dir(out, recursive=True)
    write_atomic(fs, marker, json.dumps({"run_key": key, "settings": settings}, indent=2).encode())
    return key


def _refuse_foreign(fs: pafs.FileSystem, out: str) -> None:
    """Never empty or write into a folder that holds something other than a vidcap output
    (``--out .`` or ``--out ~/thesis`` by mistake)."""
    selector = pafs.FileSelector(out, allow_not_found=True)
    foreign = sorted(
        i.base_name
        for i in fs.get_file_info(selector)
        if i.base_name not in OUTPUT_ENTRIES and not i.base_name.startswith(".")
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise RunConflict(
            f"{out} is not empty and is not a vidcap output (it holds {shown}); "
            "choose an empty or new --out"
        )


class Journal:
    """Row keys finished by the LM stage; called inside the LM actors (picklable)."""

    def __init__(
        self, out_uri: str, out: str, session: str, run: str, flush_every_s: float = 30.0
    ) -> None:
        self.out_uri, self.dir, self.run = out_uri, f"{out}/_journal/{session}", run
        self.flush_every_s = flush_every_s
        self._fs: pafs.FileSystem | None = None
        self._keys: list[str] = []
        self._flushed = 0.0

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_fs": None, "_keys": [], "_flushed": 0.0}

    def __call__(self, rows: list[dict]) -> None:
        for r in rows:
            if not r["error_code"]:
                (ask,) = asks_from_json(str(r["asks"]))
                clip = int(r["clip_index"])
                self._keys.append(row_key(r["video_key"], clip, ask.index, ask.text, self.run))
        if self._keys and time.monotonic() - self._flushed >= self.flush_every_s:
            self.flush()

    def flush(self) -> None:
        self._flushed = time.monotonic()
        if not self._keys:
            return
        if self._fs is None:
            from pipelines.core.paths import filesystem_for

            self._fs = filesystem_for(self.out_uri)[0]
            self._fs.create_dir(self.dir, recursive=True)
        write_atomic(self._fs, f"{self.dir}/{uuid.uuid4().hex}.txt", "\n".join(self._keys).encode())
        self._keys = []


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
