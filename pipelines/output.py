"""The output contract: ``clips/`` Parquet dataset + ``summary.json``, versioned.

Rows stream from the last stage to the driver, which writes them in shards. Each shard is
written under a temporary name and renamed when complete, so a reader never sees half a
file. Only small columns reach the driver: frames and embeddings are dropped earlier.
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
from pipelines.records import ROW_DEFAULTS, Caption, ClipRef, error_fields

SCHEMA_VERSION = "1.0"

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
]
SCHEMA = pa.schema(
    [pa.field(name, typ) for name, typ, _ in COLUMNS],
    metadata={"vidcap.schema_version": SCHEMA_VERSION},
)


def rows_table(batch: Mapping[str, np.ndarray], model_id: str, model_revision: str) -> pa.Table:
    n = len(batch["video_id"])
    data: dict[str, Any] = {
        "model_id": [model_id] * n,
        "model_revision": [model_revision] * n,
        "frame_ts_s": [np.asarray(t, dtype=np.float64).tolist() for t in batch["frame_ts_s"]],
    }
    for name, _, _ in COLUMNS:
        if name not in data:
            data[name] = batch[name].tolist()
    return pa.Table.from_pydict(data, schema=SCHEMA)


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
    clips_path: str = ""


class ShardWriter:
    """Writes Arrow tables as Parquet shards under ``out/clips`` and tallies the summary."""

    def __init__(self, out: str, fs: pafs.FileSystem, model_id: str, rows_per_shard: int = 5000):
        self.out, self.fs = out.rstrip("/"), fs
        self.clips_dir = f"{self.out}/clips"
        self.rows_per_shard = rows_per_shard
        self.summary = Summary(model_id=model_id, clips_path=self.clips_dir)
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._shard = 0
        self._errors: Counter[str] = Counter()
        self._videos_ok: set[str] = set()
        self._busy = Counter[str]()
        self._started = time.perf_counter()
        fs.create_dir(self.clips_dir, recursive=True)

    def add(self, table: pa.Table) -> None:
        s = self.summary
        s.rows += table.num_rows
        codes = table.column("error_code").to_pylist()
        for vid, code, clip in zip(
            table.column("video_id").to_pylist(),
            codes,
            table.column("clip_index").to_pylist(),
            strict=True,
        ):
            if code:
                self._errors[code] += 1
            else:
                self._videos_ok.add(vid)
            if clip >= 0 and not code:
                s.clips += 1
        s.prompt_tokens += pa.compute.sum(table.column("prompt_tokens")).as_py() or 0
        s.output_tokens += pa.compute.sum(table.column("output_tokens")).as_py() or 0
        for stage in ("decode", "encode", "generate"):
            self._busy[stage] += pa.compute.sum(table.column(f"{stage}_s")).as_py() or 0.0
        self._pending.append(table)
        self._pending_rows += table.num_rows
        if self._pending_rows >= self.rows_per_shard:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        final = f"{self.clips_dir}/part-{self._shard:05d}.parquet"
        tmp = f"{self.clips_dir}/.part-{self._shard:05d}.parquet.tmp"
        with self.fs.open_output_stream(tmp) as f:
            pq.write_table(table, f)
        self.fs.move(tmp, final)
        self._shard += 1
        self._pending, self._pending_rows = [], 0

    def close(self, inputs: int) -> Summary:
        self.flush()
        s = self.summary
        s.inputs = inputs
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
