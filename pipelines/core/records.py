"""Typed items that flow between stages, and their flat row form.

Rows are what Ray Data blocks and Parquet hold: one flat dict per clip with a fixed set
of columns, so every block of a stage has the same schema. Stages never see rows: the
adapters turn rows into these records, and records back into row updates.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from pipelines.core.errors import ErrorCode, StageError

# clip_index of a row whose error concerns the whole video (no clip could be cut).
VIDEO_LEVEL = -1

EMPTY_FRAMES = np.zeros((0, 0, 0, 3), dtype=np.uint8)


Task = Literal["caption", "qa"]


@dataclass(frozen=True)
class Ask:
    """One prompt or question to put to the clips of a video.

    ``start_s``/``end_s`` limit a question to the clips that overlap that time range (a
    point in time picks the clip that contains it); without them every clip is asked.
    ``index`` is the ask's position in its video's list: output rows carry it as
    ``prompt_index``.
    """

    text: str
    task: Task = "caption"
    start_s: float | None = None
    end_s: float | None = None
    index: int = 0
    history: tuple[tuple[str, str], ...] = ()
    """Earlier (user, assistant) turns of a chat about the same video (online follow-ups)."""

    def covers(self, start_s: float, end_s: float) -> bool:
        lo = self.start_s if self.start_s is not None else float("-inf")
        hi = self.end_s if self.end_s is not None else float("inf")
        if lo == hi:
            return start_s <= lo < end_s
        return lo < end_s and hi > start_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "task": self.task,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "index": self.index,
            "history": [list(turn) for turn in self.history],
        }


def asks_to_json(asks: Sequence[Ask]) -> str:
    return json.dumps([a.to_dict() for a in asks])


def asks_from_json(text: str) -> tuple[Ask, ...]:
    if not text:
        return ()
    return tuple(
        Ask(**{**d, "history": tuple(tuple(t) for t in d.get("history", ()))})
        for d in json.loads(text)
    )


def numbered(asks: Sequence[Ask]) -> tuple[Ask, ...]:
    return tuple(replace(a, index=i) for i, a in enumerate(asks))


@dataclass(frozen=True)
class VideoTask:
    """One input video and everything to ask about it (prompts and questions)."""

    video_id: str
    source: str
    asks: tuple[Ask, ...]
    video_key: str = ""
    """Identity of the work item (see pipelines.core.keys); empty when not computed."""
    subtitles: str = ""
    """A subtitle file (.srt/.vtt path or URI) for this video, from the manifest."""
    context: str = ""
    """Free text that comes with the video (a title, a description), from the manifest."""
    transcript: str = ""
    """Speech-recognition segments (``segments_to_json``), when the ASR pass ran."""

    @classmethod
    def with_prompt(cls, video_id: str, source: str, prompt: str) -> VideoTask:
        return cls(video_id, source, (Ask(prompt),))

    def to_row(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "source": self.source,
            "asks": asks_to_json(self.asks),
            "video_key": self.video_key,
            "subtitles": self.subtitles,
            "context": self.context,
            "transcript": self.transcript,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> VideoTask:
        return cls(
            str(row["video_id"]),
            str(row["source"]),
            asks_from_json(str(row["asks"])),
            str(row.get("video_key", "")),
            str(row.get("subtitles") or ""),
            str(row.get("context") or ""),
            str(row.get("transcript") or ""),
        )


@dataclass(frozen=True)
class ClipRef:
    """Where a clip comes from and what to ask it; fixed by the decode stage.

    ``asks`` are the prompts and questions that apply to this clip: the language-model
    stage answers each one from the clip's single encoding (see ``for_ask``), so a clip
    yields one output row per ask.
    """

    video_id: str
    source: str
    asks: tuple[Ask, ...]
    clip_index: int
    start_s: float
    end_s: float
    frame_ts_s: tuple[float, ...] = ()
    partial: bool = False
    video_key: str = ""
    last: bool = False
    """True on the video's final clip: the writer then learns ``video_rows``."""
    video_rows: int = 0
    """On the final clip: how many output rows the whole video makes (sum of its asks)."""
    attempt: int = 0
    """Decode attempt that made this clip; a later attempt's rows replace an earlier one's."""
    speech: str = ""
    """The clip's own speech: subtitle cues or transcript segments overlapping its range."""
    video_context: str = ""
    """The video's free-text context (manifest ``context``)."""
    context_source: str = ""
    """Where ``speech``/``context`` came from: ``subtitles``, ``transcript``, ``manifest``
    (comma-joined when several); empty when the clip has none."""

    @property
    def ask(self) -> Ask:
        """The one ask of a clip that ``for_ask`` narrowed down (the LM stage's view)."""
        if len(self.asks) != 1:
            raise ValueError(f"clip {self.clip_index} has {len(self.asks)} asks, expected one")
        return self.asks[0]

    @property
    def prompt(self) -> str:
        return self.ask.text

    def for_ask(self, ask: Ask) -> ClipRef:
        return replace(self, asks=(ask,))

    @classmethod
    def for_video_error(cls, task: VideoTask, attempt: int = 0) -> ClipRef:
        return cls(
            task.video_id,
            task.source,
            task.asks,
            VIDEO_LEVEL,
            0.0,
            0.0,
            video_key=task.video_key,
            last=True,
            attempt=attempt,
        )

    def to_row(self) -> dict[str, Any]:
        return {
            "video_id": self.video_id,
            "source": self.source,
            "asks": asks_to_json(self.asks),
            "clip_index": self.clip_index,
            "start_s": self.start_s,
            "end_s": self.end_s,
            "frame_ts_s": np.asarray(self.frame_ts_s, dtype=np.float64),
            "partial": self.partial,
            "video_key": self.video_key,
            "last": self.last,
            "video_rows": self.video_rows,
            "attempt": self.attempt,
            "speech": self.speech,
            "video_context": self.video_context,
            "context_source": self.context_source,
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> ClipRef:
        return cls(
            video_id=str(row["video_id"]),
            source=str(row["source"]),
            asks=asks_from_json(str(row["asks"])),
            clip_index=int(row["clip_index"]),
            start_s=float(row["start_s"]),
            end_s=float(row["end_s"]),
            frame_ts_s=tuple(float(t) for t in row["frame_ts_s"]),
            partial=bool(row["partial"]),
            video_key=str(row.get("video_key", "")),
            last=bool(row.get("last", False)),
            video_rows=int(row.get("video_rows", 0)),
            attempt=int(row.get("attempt", 0)),
            speech=str(row.get("speech") or ""),
            video_context=str(row.get("video_context") or ""),
            context_source=str(row.get("context_source") or ""),
        )


@dataclass(frozen=True)
class AudioChunk:
    """One window of a video's audio track for the speech-recognition stage.

    ``samples`` are 16 kHz mono float32. Windows overlap; a segment is kept by the window
    whose ``own_start_s..own_end_s`` holds the segment's middle, so each is kept once.
    Times are seconds on the decoder's clock (from the video stream's first frame).
    """

    video_key: str
    index: int
    start_s: float
    end_s: float
    own_start_s: float
    own_end_s: float
    samples: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Segment:
    """A stretch of recognized speech, in seconds on the decoder's clock."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class ChunkTranscript:
    """The speech-recognition stage's result for one ``AudioChunk``: the segments the chunk
    owns (absolute times), the generated token ids and the language."""

    video_key: str
    index: int
    segments: tuple[Segment, ...]
    token_ids: tuple[int, ...]
    language: str = ""
    asr_s: float = 0.0


def segments_to_json(segments: Sequence[Segment]) -> str:
    return json.dumps([[round(s.start_s, 3), round(s.end_s, 3), s.text] for s in segments])


def segments_from_json(text: str) -> tuple[Segment, ...]:
    if not text:
        return ()
    return tuple(Segment(float(a), float(b), str(t)) for a, b, t in json.loads(text))


@dataclass(frozen=True)
class Clip:
    """Decoded, sampled RGB frames of one clip: uint8 (N, H, W, 3)."""

    ref: ClipRef
    frames: np.ndarray = field(repr=False)
    decode_s: float = 0.0


@dataclass(frozen=True)
class FailedClip:
    """A clip (or, with ``clip_index == VIDEO_LEVEL``, a whole video) that produced no frames."""

    ref: ClipRef
    error: StageError
    decode_s: float = 0.0


@dataclass(frozen=True)
class EncodedClip:
    """A clip after the vision encoder: the family's encoder output, serialized."""

    ref: ClipRef
    encoded: bytes = field(repr=False)
    encode_s: float = 0.0


@dataclass(frozen=True)
class Caption:
    """The language model's text for one clip and prompt."""

    ref: ClipRef
    text: str
    prompt_tokens: int
    output_tokens: int
    generate_s: float = 0.0
    context: str = ""
    """The video's text the prompt was given (speech and manifest context, after the cut)."""
    context_tokens: int = 0
    """Tokens of ``context`` (as the LM's tokenizer counts them)."""
    context_cut_tokens: int = 0
    """Tokens of context dropped to fit ``ContextConfig.max_tokens``."""


# Columns every row has from the decode stage on; their defaults fill error rows.
ROW_DEFAULTS: dict[str, Any] = {
    "decode_s": 0.0,
    "encode_s": 0.0,
    "generate_s": 0.0,
    "text": "",
    "prompt_tokens": 0,
    "output_tokens": 0,
    "context": "",
    "context_tokens": 0,
    "context_cut_tokens": 0,
    "error_code": "",
    "error_message": "",
    "error_stage": "",
}


def error_fields(err: StageError) -> dict[str, Any]:
    return {"error_code": err.code.value, "error_message": err.message, "error_stage": err.stage}


def row_error(row: Mapping[str, Any]) -> StageError | None:
    code = row.get("error_code") or ""
    if not code:
        return None
    return StageError(ErrorCode(code), str(row["error_message"]), str(row["error_stage"]))


# -- row codecs: the stages' items and results as flat rows (see ``core.stage.RowCodec``) --


def clip_from_row(row: Mapping[str, Any]) -> Clip:
    return Clip(ClipRef.from_row(row), row["frames"], float(row["decode_s"]))


def encoded_from_row(row: Mapping[str, Any]) -> EncodedClip:
    return EncodedClip(ClipRef.from_row(row), bytes(row["encoded"]), float(row["encode_s"]))


def encoded_update(out: EncodedClip) -> dict[str, Any]:
    return {"encoded": out.encoded, "encode_s": out.encode_s}


def caption_update(out: Caption) -> dict[str, Any]:
    return {
        "text": out.text,
        "prompt_tokens": out.prompt_tokens,
        "output_tokens": out.output_tokens,
        "generate_s": out.generate_s,
        "context": out.context,
        "context_tokens": out.context_tokens,
        "context_cut_tokens": out.context_cut_tokens,
    }


def decoded_row(out: Clip | FailedClip) -> dict[str, Any]:
    if isinstance(out, FailedClip):
        return error_row(out.ref, out.error, out.decode_s)
    return clip_row(out)


def expand_asks(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (clip, ask): every ask of a clip shares that clip's single encoding.

    Error rows are expanded too, so each ask of a failed clip gets its own row saying why
    it has no answer.
    """
    out = []
    for row in rows:
        for ask in asks_from_json(str(row["asks"])):
            out.append({**row, "asks": asks_to_json((ask,))})
    return out


def clip_row(clip: Clip) -> dict[str, Any]:
    return {**ROW_DEFAULTS, **clip.ref.to_row(), "frames": clip.frames, "decode_s": clip.decode_s}


def error_row(ref: ClipRef, err: StageError, decode_s: float = 0.0) -> dict[str, Any]:
    return {
        **ROW_DEFAULTS,
        **ref.to_row(),
        "frames": EMPTY_FRAMES,
        "decode_s": decode_s,
        **error_fields(err),
    }
