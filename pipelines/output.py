"""The output contract: ``clips/`` Parquet dataset + ``summary.json``, versioned.

Rows stream from the last stage to the driver, which writes them in shards. A shard only
ever holds *complete* videos (every row of a video, told by the row flagged ``last``), and
it is written under a temporary name then renamed: the rename is the commit. So the set of
committed shards is itself the ledger of finished videos — a rerun skips exactly those,
and no video can end up half in one attempt's shard and half in another's. Only small
columns reach the driver: frames and embeddings are dropped earlier.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.errors import StageError
from pipelines.keys import row_key
from pipelines.records import ROW_DEFAULTS, VIDEO_LEVEL, Caption, ClipRef, error_fields

SCHEMA_VERSION = "1.1"

# name, type, description: the README's schema table is generated from this list.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("video_id", pa.string(), "Input video id (manifest `video_id`, else stem + hash of source)."),
    ("source", pa.string(), "Path or URI the video was read from."),
    ("clip_index", pa.int32(), "0-based clip number in the video; -1 for a video-level error."),
    ("start_s", pa.float64(), "Clip window start, seconds from the first frame's PTS."),
    ("end_s", pa.float64(), "Clip window end (exclusive), seconds."),
    ("frame_ts_s", pa.list_(pa.float64()), "PTS time in seconds of each sampled frame."),
    ("partial", pa.bool_(), "True when the file ended or broke inside this clip."),
    ("prompt", pa.string(), "The user prompt the text answers."),
    ("text", pa.string(), "Generated text; empty on error rows."),
    ("model_id", pa.string(), "Hub id or local folder of the model."),
    ("model_revision", pa.string(), "Hub revision asked for; empty for the default branch."),
    ("prompt_tokens", pa.int32(), "Tokens in the full prompt, visual placeholders included."),
    ("output_tokens", pa.int32(), "Tokens generated, end-of-sequence excluded."),
    ("decode_s", pa.float64(), "Seconds spent decoding and sampling this clip."),
    ("encode_s", pa.float64(), "Vision-encoder seconds for this clip (batch time / batch size)."),
    ("generate_s", pa.float64(), "Language-model seconds for this clip (batch time / batch size)."),
    ("error_code", pa.string(), "Empty on success, else an ErrorCode value (see README)."),
    ("error_message", pa.string(), "Human-readable reason; empty on success."),
    (
        "error_stage",
        pa.string(),
        "Stage that failed: decode, encode or generate; empty on success.",
    ),
    ("video_key", pa.string(), "Content identity of the input (path+size+mtime, or bytes hash)."),
    ("row_key", pa.string(), "Unique key of the row: video key, clip, prompt and run settings."),
]
SCHEMA = pa.schema(
    [pa.field(name, typ) for name, typ, _ in COLUMNS],
    metadata={"vidcap.schema_version": SCHEMA_VERSION},
)


def batch_rows(
    batch: Mapping[str, np.ndarray], model_id: str, model_revision: str, run: str
) -> list[dict[str, Any]]:
    """Output rows (plus the internal ``last`` flag) from a numpy batch of the last stage."""
    n = len(batch["video_id"])
    cols = {name: batch[name].tolist() for name, _, _ in COLUMNS if name in batch}
    rows = []
    for i in range(n):
        row = {name: values[i] for name, values in cols.items()}
        row["frame_ts_s"] = np.asarray(batch["frame_ts_s"][i], dtype=np.float64).tolist()
        row["model_id"], row["model_revision"] = model_id, model_revision
        row["row_key"] = row_key(row["video_key"], row["clip_index"], row["prompt"], run)
        row["last"] = bool(batch["last"][i])
        rows.append(row)
    return rows


@dataclass
class Summary:
    """What ``summary.json`` holds; also printed as a table at the end of a run."""

    schema_version: str = SCHEMA_VERSION
    model_id: str = ""
    inputs: int = 0
    videos_with_text: int = 0
    clips: int = 0
    rows: int = 0
    error_rows: int = 0
    errors_by_code: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    output_tokens: int = 0
    wall_s: float = 0.0
    clips_per_s: float = 0.0
    output_tokens_per_s: float = 0.0
    stage_busy_s: dict[str, float] = field(default_factory=dict)
    skipped_done: int = 0
    """Inputs skipped because an earlier run with the same settings committed them."""
    processed: int = 0
    """Inputs committed by this run."""
    retries: int = 0
    """Decode attempts beyond the first (a worker died while decoding)."""
    rework: int = 0
    """Clips captioned again that an interrupted earlier run had already captioned."""
    clips_path: str = ""


class ShardWriter:
    """Commits complete videos as Parquet shards under ``out/clips`` and tallies the summary."""

    def __init__(
        self,
        out: str,
        fs: pafs.FileSystem,
        model_id: str,
        session: str,
        rows_per_shard: int = 5000,
        commit_interval_s: float = 30.0,
    ):
        self.out, self.fs = out.rstrip("/"), fs
        self.clips_dir = f"{self.out}/clips"
        self.session = session
        self.rows_per_shard = rows_per_shard
        self.commit_interval_s = commit_interval_s
        self.summary = Summary(model_id=model_id, clips_path=self.clips_dir)
        self._open: dict[str, dict[int, dict]] = {}  # video key -> clip index -> row
        self._expected: dict[str, int] = {}  # video key -> number of rows, once known
        self._done: set[str] = set()
        self._pending: list[dict] = []
        self._last_commit = time.monotonic()
        self._shard = 0
        self._errors: Counter[str] = Counter()
        self._videos_ok: set[str] = set()
        self._busy = Counter[str]()
        self._started = time.perf_counter()
        fs.create_dir(self.clips_dir, recursive=True)

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            key = row["video_key"]
            if key in self._done:
                continue  # a retried task re-sent rows of a video already complete
            if row["clip_index"] == VIDEO_LEVEL:
                # A video-level error (or a quarantine) replaces whatever came before it.
                self._open[key], self._expected[key] = {VIDEO_LEVEL: row}, 1
            else:
                self._open.setdefault(key, {})[row["clip_index"]] = row
                if row.pop("last"):
                    self._expected[key] = row["clip_index"] + 1
            row.pop("last", None)
            if len(self._open.get(key, ())) == self._expected.get(key, -1):
                self._complete(key)
        if (
            len(self._pending) >= self.rows_per_shard
            or time.monotonic() - self._last_commit >= self.commit_interval_s
        ):
            self.commit()

    def _complete(self, key: str) -> None:
        rows = [row for _, row in sorted(self._open.pop(key).items())]
        del self._expected[key]
        self._done.add(key)
        self._pending.extend(rows)
        s = self.summary
        for row in rows:
            s.rows += 1
            if row["error_code"]:
                self._errors[row["error_code"]] += 1
            else:
                self._videos_ok.add(key)
                s.clips += 1
            s.prompt_tokens += row["prompt_tokens"]
            s.output_tokens += row["output_tokens"]
            for stage in ("decode", "encode", "generate"):
                self._busy[stage] += row[f"{stage}_s"]

    def commit(self) -> None:
        self._last_commit = time.monotonic()
        if not self._pending:
            return
        table = pa.Table.from_pylist(self._pending, schema=SCHEMA)
        name = f"part-{self.session}-{self._shard:05d}.parquet"
        tmp = f"{self.clips_dir}/.{name}.tmp"
        with self.fs.open_output_stream(tmp) as f:
            pq.write_table(table, f)
        self.fs.move(tmp, f"{self.clips_dir}/{name}")
        self._shard += 1
        self._pending = []

    @property
    def incomplete_videos(self) -> int:
        return len(self._open)

    def close(self, inputs: int, **counts: int) -> Summary:
        self.commit()
        s = self.summary
        s.inputs = inputs
        for name, value in counts.items():
            setattr(s, name, value)
        s.processed = len(self._done)
        s.error_rows = sum(self._errors.values())
        s.errors_by_code = dict(sorted(self._errors.items()))
        s.videos_with_text = len(self._videos_ok)
        s.wall_s = round(time.perf_counter() - self._started, 3)
        s.clips_per_s = round(s.clips / s.wall_s, 3) if s.wall_s else 0.0
        s.output_tokens_per_s = round(s.output_tokens / s.wall_s, 3) if s.wall_s else 0.0
        s.stage_busy_s = {k: round(v, 3) for k, v in self._busy.items()}
        with self.fs.open_output_stream(f"{self.out}/summary.json") as f:
            f.write(json.dumps(asdict(s), indent=2).encode())
        return s


def committed_video_keys(fs: pafs.FileSystem, out: str) -> set[str]:
    """Videos whose rows are in committed shards (leftover ``.tmp`` files are ignored)."""
    selector = pafs.FileSelector(f"{out.rstrip('/')}/clips", allow_not_found=True)
    keys: set[str] = set()
    for info in fs.get_file_info(selector):
        if info.base_name.startswith("part-") and info.base_name.endswith(".parquet"):
            with fs.open_input_file(info.path) as f:
                keys.update(pq.read_table(f, columns=["video_key"]).column(0).to_pylist())
    return keys


def schema_markdown() -> str:
    """The README's schema table, generated so the docs cannot drift from the code."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{typ}` | {doc} |" for name, typ, doc in COLUMNS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(schema_markdown())


def result_row(
    ref: ClipRef,
    result: Caption | StageError,
    *,
    model_id: str,
    model_revision: str = "",
    decode_s: float = 0.0,
    encode_s: float = 0.0,
) -> dict[str, Any]:
    """One output row (the Parquet columns, in order) for a clip's result; used online."""
    row: dict[str, Any] = {
        **ROW_DEFAULTS,
        **ref.to_row(),
        "model_id": model_id,
        "model_revision": model_revision,
        "decode_s": decode_s,
        "encode_s": encode_s,
    }
    row["frame_ts_s"] = list(ref.frame_ts_s)
    row["row_key"] = ""  # online rows are not part of a run
    if isinstance(result, StageError):
        row.update(error_fields(result))
    else:
        row.update(
            text=result.text,
            prompt_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
            generate_s=result.generate_s,
        )
    return {name: row[name] for name, _, _ in COLUMNS}
