"""The output contract: ``clips/`` Parquet dataset + ``summary.json``, versioned.

Rows stream from the last stage to the driver, which writes them in shards. A shard only
ever holds *complete* videos — every row of a video: the rows of its final clip carry
``last`` and the video's row count (clips x asks, plus error rows), and rows of a decode
attempt that died are replaced by the next attempt's — and it is written under a temporary
name then renamed: the rename is the commit. So the set of
committed shards is itself the ledger of finished videos — a rerun skips exactly those,
and no video can end up half in one attempt's shard and half in another's. Only small
columns reach the driver: frames and embeddings are dropped earlier.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.core.keys import KeySet, row_key
from pipelines.core.records import Ask, asks_from_json

SCHEMA_VERSION = "1.3"

# name, type, description: the README's schema table is generated from this list.
COLUMNS: list[tuple[str, pa.DataType, str]] = [
    ("video_id", pa.string(), "Input video id (manifest `video_id`, else stem + hash of source)."),
    ("source", pa.string(), "Path or URI the video was read from."),
    ("clip_index", pa.int32(), "0-based clip number in the video; -1 for a video-level error."),
    ("start_s", pa.float64(), "Clip window start, seconds from the first frame's PTS."),
    ("end_s", pa.float64(), "Clip window end (exclusive), seconds."),
    ("frame_ts_s", pa.list_(pa.float64()), "PTS time in seconds of each sampled frame."),
    ("partial", pa.bool_(), "True when the file ended or broke inside this clip."),
    ("prompt", pa.string(), "The prompt or question the text answers."),
    (
        "prompt_index",
        pa.int32(),
        "Position of the prompt in the video's list (job prompts, then questions).",
    ),
    ("task", pa.string(), "`caption` for a prompt, `qa` for a question."),
    ("text", pa.string(), "Generated text; empty on error rows."),
    ("model_id", pa.string(), "Hub id or local folder of the model."),
    ("model_revision", pa.string(), "Hub revision asked for; empty for the default branch."),
    ("prompt_tokens", pa.int32(), "Tokens in the full prompt, visual placeholders included."),
    ("output_tokens", pa.int32(), "Tokens generated, end-of-sequence excluded."),
    (
        "context",
        pa.string(),
        "The video's text the prompt was given: manifest context, then the clip's speech "
        "(after the token budget); empty when none.",
    ),
    (
        "context_source",
        pa.string(),
        "Where the clip's context came from: `subtitles`, `transcript`, `manifest` "
        "(comma-joined); empty when none.",
    ),
    ("context_tokens", pa.int32(), "Tokens of `context` in the prompt."),
    (
        "context_cut_tokens",
        pa.int32(),
        "Context tokens dropped to fit the budget (`--context-max-tokens`); 0 when none.",
    ),
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
    (
        "video_key",
        pa.string(),
        "Identity of the work item: the input (path+size+mtime, or bytes hash) and its asks.",
    ),
    (
        "row_key",
        pa.string(),
        "Unique key of the row: video key, clip, prompt and its index, run settings.",
    ),
]
SCHEMA = pa.schema(
    [pa.field(name, typ) for name, typ, _ in COLUMNS],
    metadata={"vidcap.schema_version": SCHEMA_VERSION},
)


def batch_rows(
    batch: Mapping[str, np.ndarray], model_id: str, model_revision: str, run: str
) -> list[dict[str, Any]]:
    """Output rows (plus the internal ``last`` flag) from a numpy batch of the last stage.

    This runs on the driver for every row of the corpus: columns are converted once, and
    an ask's JSON (shared by every clip asked the same thing) is parsed once per batch."""
    cols = {name: batch[name].tolist() for name, _, _ in COLUMNS if name in batch}
    cols["frame_ts_s"] = [np.asarray(t, dtype=np.float64).tolist() for t in batch["frame_ts_s"]]
    last, video_rows = batch["last"].tolist(), batch["video_rows"].tolist()
    attempts = batch["attempt"].tolist()
    asks: dict[str, Ask] = {}
    rows = []
    names = list(cols)
    every = zip(batch["asks"].tolist(), zip(*cols.values(), strict=True), strict=True)
    for i, (ask_json, values) in enumerate(every):
        ask = asks.get(ask_json)
        if ask is None:
            (ask,) = asks_from_json(str(ask_json))
            asks[ask_json] = ask
        row = dict(zip(names, values, strict=True))
        row.update(prompt=ask.text, prompt_index=ask.index, task=ask.task)
        row["model_id"], row["model_revision"] = model_id, model_revision
        row["row_key"] = row_key(row["video_key"], row["clip_index"], ask.index, ask.text, run)
        row["last"], row["video_rows"], row["attempt"] = last[i], video_rows[i], attempts[i]
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
    videos_summarized: int = 0
    """``--summarize``: videos with a summary row written by this run."""
    summary_errors: int = 0
    """``--summarize``: summary rows written with an error (e.g. no caption to start from)."""
    summaries_skipped_done: int = 0
    """``--summarize``: videos whose summary an earlier run had committed."""
    transcripts: dict[str, Any] = field(default_factory=dict)
    """``--asr``: the speech-recognition pass of this run (videos transcribed, with
    subtitles, errors by code, audio seconds, wall seconds); empty when it did not run."""
    clips_path: str = ""


class VideoParts:
    """A writer's videos in flight, until each is complete: the exactly-once rule that the
    ``clips/`` and ``transcripts/`` writers share.

    A row of an older attempt than the video's newest is dropped (that attempt died); a row
    of a newer attempt replaces what the older one had sent (a retry, or a quarantine row);
    a video completed in this session is not taken again (a retried task re-sent it). A
    video is complete when it holds as many parts as its last row said it has.
    """

    def __init__(self) -> None:
        self._open: dict[str, dict[Any, dict]] = {}  # video key -> part -> row
        self._expected: dict[str, int] = {}  # video key -> number of parts, once known
        self._attempt: dict[str, int] = {}  # video key -> attempt its open rows are from
        self._done: set[int | str] = set()  # compact keys of the completed videos

    def add(self, key: str, part: Any, row: dict, attempt: int, total: int = 0) -> list[dict]:
        """Take one row; return the video's rows in part order when it is now complete
        (else []). ``total``: on the video's last row, how many parts it has."""
        if compact_key(key) in self._done:
            return []
        current = self._attempt.get(key, -1)
        if attempt < current:
            return []
        if attempt > current:
            self._attempt[key] = attempt
            self._open[key] = {}
            self._expected.pop(key, None)
        self._open[key][part] = row
        if total:
            self._expected[key] = total
        if len(self._open[key]) != self._expected.get(key, -1):
            return []
        rows = [r for _, r in sorted(self._open.pop(key).items())]
        del self._expected[key], self._attempt[key]
        self._done.add(compact_key(key))
        return rows

    @property
    def incomplete(self) -> int:
        return len(self._open)

    @property
    def completed(self) -> int:
        return len(self._done)


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
        self._videos = VideoParts()  # parts: (clip, ask); attempts: decode attempts
        self._pending: list[dict] = []
        self._last_commit = time.monotonic()
        self._shard = 0
        self._errors: Counter[str] = Counter()
        self._videos_ok = 0
        self._busy = Counter[str](dict.fromkeys(STAGES, 0.0))
        self._started = time.perf_counter()
        fs.create_dir(self.clips_dir, recursive=True)

    def add(self, rows: list[dict]) -> None:
        for row in rows:
            last, video_rows, attempt = row.pop("last"), row.pop("video_rows"), row.pop("attempt")
            part = (row["clip_index"], row["prompt_index"])
            total = video_rows if last else 0
            if done := self._videos.add(row["video_key"], part, row, attempt, total):
                self._complete(done)
        if (
            len(self._pending) >= self.rows_per_shard
            or time.monotonic() - self._last_commit >= self.commit_interval_s
        ):
            self.commit()

    def _complete(self, rows: list[dict]) -> None:
        self._pending.extend(rows)
        s = self.summary
        s.clips += len({row["clip_index"] for row in rows if not row["error_code"]})
        ok = False
        for row in rows:
            s.rows += 1
            if row["error_code"]:
                self._errors[row["error_code"]] += 1
            else:
                ok = True
            s.prompt_tokens += row["prompt_tokens"]
            s.output_tokens += row["output_tokens"]
        self._videos_ok += ok
        for stage, seconds in clip_durations(rows).items():
            self._busy[stage] += sum(seconds)

    def commit(self) -> None:
        self._last_commit = time.monotonic()
        if not self._pending:
            return
        name = f"part-{self.session}-{self._shard:05d}.parquet"
        write_shard(self.fs, self.clips_dir, name, pa.Table.from_pylist(self._pending, SCHEMA))
        self._shard += 1
        self._pending = []

    @property
    def incomplete_videos(self) -> int:
        return self._videos.incomplete

    def close(self, inputs: int, **counts: int) -> Summary:
        self.commit()
        s = self.summary
        s.inputs = inputs
        for name, value in counts.items():
            setattr(s, name, value)
        s.processed = self._videos.completed
        s.error_rows = sum(self._errors.values())
        s.errors_by_code = dict(sorted(self._errors.items()))
        s.videos_with_text = self._videos_ok
        s.wall_s = round(time.perf_counter() - self._started, 3)
        s.clips_per_s = round(s.clips / s.wall_s, 3) if s.wall_s else 0.0
        s.output_tokens_per_s = round(s.output_tokens / s.wall_s, 3) if s.wall_s else 0.0
        s.stage_busy_s = {k: round(v, 3) for k, v in self._busy.items()}
        write_summary(self.fs, self.out, s)
        return s


def compact_key(key: str) -> int | str:
    """A finished video's key as a 128-bit int (~44 bytes instead of ~80 for the string);
    other keys (tests) as they are. All of the key: a shorter prefix could collide and
    silently drop a video."""
    try:
        return int(key, 16) if len(key) == 32 else key
    except ValueError:
        return key


def write_summary(fs: pafs.FileSystem, out: str, summary: Summary) -> None:
    write_atomic(
        fs, f"{out.rstrip('/')}/summary.json", json.dumps(asdict(summary), indent=2).encode()
    )


def write_atomic(fs: pafs.FileSystem, path: str, data: bytes) -> None:
    """Write ``path`` under a temporary name, then rename: readers see all of it or none."""
    folder, name = path.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    fs.move(tmp, path)


def sweep_tmp(fs: pafs.FileSystem, folder: str) -> int:
    """Delete the ``.*.tmp`` files a crashed writer left in ``folder``; return how many."""
    selector = pafs.FileSelector(folder, allow_not_found=True)
    stale = [
        i.path
        for i in fs.get_file_info(selector)
        if i.type == pafs.FileType.File
        and i.base_name.startswith(".")
        and i.base_name.endswith(".tmp")
    ]
    for path in stale:
        fs.delete_file(path)
    return len(stale)


STAGES = ("decode", "encode", "generate")


def clip_durations(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Per stage, seconds per clip in arrival order. A clip asked several prompts has a row
    per prompt, each repeating the clip's decode and encode time (it ran once) and carrying
    its own share of generate time (summed)."""
    clips: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["video_id"], r["clip_index"])
        if key not in clips:
            clips[key] = {s: r[f"{s}_s"] for s in STAGES}
        else:
            clips[key]["generate"] += r["generate_s"]
    return {s: [c[s] for c in clips.values()] for s in STAGES}


def write_shard(fs: pafs.FileSystem, folder: str, name: str, table: pa.Table) -> None:
    """Write ``folder/name`` under a temporary name, then rename: the rename is the commit."""
    tmp = f"{folder}/.{name}.tmp"
    with fs.open_output_stream(tmp) as f:
        pq.write_table(table, f)
    fs.move(tmp, f"{folder}/{name}")


def committed_shards(fs: pafs.FileSystem, folder: str) -> list[str]:
    """Paths of the committed ``part-*.parquet`` shards of a folder, in name order."""
    selector = pafs.FileSelector(folder, allow_not_found=True)
    return sorted(
        info.path
        for info in fs.get_file_info(selector)
        if info.base_name.startswith("part-") and info.base_name.endswith(".parquet")
    )


def committed_keys(fs: pafs.FileSystem, folder: str) -> set[str]:
    """``video_key`` values in a folder's committed shards (leftover ``.tmp`` files ignored)."""
    keys: set[str] = set()
    for path in committed_shards(fs, folder):
        with fs.open_input_file(path) as f:
            keys.update(pq.read_table(f, columns=["video_key"]).column(0).to_pylist())
    return keys


def committed_video_keys(fs: pafs.FileSystem, out: str) -> set[str]:
    """Videos whose rows are in committed ``clips/`` shards."""
    return committed_keys(fs, f"{out.rstrip('/')}/clips")


def committed_keyset(fs: pafs.FileSystem, folder: str) -> KeySet:
    """``committed_keys`` as a compact ``KeySet`` (32 bytes a key, no Python objects)."""
    columns = []
    for path in committed_shards(fs, folder):
        with fs.open_input_file(path) as f:
            columns.append(pq.read_table(f, columns=["video_key"]).column(0))
    return KeySet.from_arrays(columns)


def schema_markdown() -> str:
    """The README's schema table, generated so the docs cannot drift from the code."""
    lines = ["| column | type | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{typ}` | {doc} |" for name, typ, doc in COLUMNS]
    return "\n".join(lines)


if __name__ == "__main__":
    print(schema_markdown())
