"""Hand-made run outputs (Parquet shards + summary.json) in the documented schema, no Ray.

A plain module (not conftest) so tests can import the row helpers by name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.core.output import COLUMNS, SCHEMA, SCHEMA_VERSION

ROW: dict[str, Any] = {
    "video_id": "",
    "source": "",
    "clip_index": 0,
    "start_s": 0.0,
    "end_s": 0.0,
    "frame_ts_s": [],
    "partial": False,
    "prompt": "Describe.",
    "prompt_index": 0,
    "task": "caption",
    "text": "",
    "model_id": "tiny",
    "model_revision": "",
    "prompt_tokens": 10,
    "output_tokens": 4,
    "decode_s": 0.01,
    "encode_s": 0.02,
    "generate_s": 0.2,
    "error_code": "",
    "error_message": "",
    "error_stage": "",
}


def clip(video_id: str, source: str, index: int, start: float, end: float, **kw) -> dict:
    return {**ROW, "video_id": video_id, "source": source, "clip_index": index, "start_s": start,
            "end_s": end, **kw}  # fmt: skip


def failure(video_id: str, source: str, code: str, message: str = "bad") -> dict:
    return {**ROW, "video_id": video_id, "source": source, "clip_index": -1, "error_code": code,
            "error_message": message, "error_stage": "decode", "output_tokens": 0,
            "prompt_tokens": 0, "encode_s": 0.0, "generate_s": 0.0}  # fmt: skip


def write_run(out: Path, rows: list[dict], rows_per_shard: int = 1000, summary: bool = True) -> str:
    (out / "clips").mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, len(rows), rows_per_shard)):
        chunk = rows[start : start + rows_per_shard]
        # Columns added to the schema later (not set here) are left null.
        table = pa.Table.from_pylist([{n: r.get(n) for n, _, _ in COLUMNS} for r in chunk], SCHEMA)
        pq.write_table(table, out / "clips" / f"part-{shard:05d}.parquet")
    if summary:
        errors: dict[str, int] = {}
        for r in rows:
            if r["error_code"]:
                errors[r["error_code"]] = errors.get(r["error_code"], 0) + 1
        (out / "summary.json").write_text(
            json.dumps(
                {
                    "schema_version": SCHEMA_VERSION,
                    "model_id": "tiny",
                    "inputs": len({r["video_id"] for r in rows}),
                    "rows": len(rows),
                    "error_rows": sum(errors.values()),
                    "errors_by_code": errors,
                    "wall_s": 12.5,
                    "clips_per_s": 0.8,
                    "stage_busy_s": {"decode": 1.0, "encode": 2.0, "generate": 3.0},
                }
            )
        )
    return str(out)
