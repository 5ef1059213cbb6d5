"""Summary stage: a video's timestamped captions (+ transcript) -> one summary, text only.

The language model's context is finite and a long video's captions are not: lines are
packed into parts whose prompt fits the budget, each part is summarized (map), and the
parts' summaries, stamped with the time span they cover, are packed and summarized again
(reduce) until one prompt holds everything. A line too long for any prompt on its own is
cut into pieces that fit. Nothing is truncated.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipelines.core.config import GenerationConfig, ModelConfig, PoolConfig, SummaryConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.records import segments_from_json
from pipelines.core.stage import RowCodec
from pipelines.media.subtitles import load_cues
from pipelines.models.base import GenOutput
from pipelines.models.text_lm import load_summary_lm
from pipelines.stages.model import ModelStage

MAX_LEVELS = 12  # reduce levels before giving up (each level divides the lines by >= 2)


@dataclass(frozen=True)
class Line:
    start_s: float
    end_s: float
    text: str
    speech: bool = False

    def render(self) -> str:
        span = f"{clock(self.start_s)}-{clock(self.end_s)}"
        return f"[{span}] (speech) {self.text}" if self.speech else f"[{span}] {self.text}"


def clock(seconds: float) -> str:
    seconds = int(seconds)
    h, m, s = seconds // 3600, seconds // 60 % 60, seconds % 60
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


@dataclass(frozen=True)
class VideoCaptions:
    """Everything captioned about one video, in time order."""

    video_id: str
    source: str
    video_key: str
    captions: tuple[Line, ...]
    transcript: str = ""
    """Speech-recognition segments (JSON), used when the video has no subtitles."""


@dataclass(frozen=True)
class VideoSummary:
    video: VideoCaptions
    text: str
    transcript_cues: int
    lm_calls: int
    levels: int
    """Reduce levels: 0 when everything fit one prompt."""
    max_prompt_tokens: int
    prompt_tokens: int
    output_tokens: int
    summarize_s: float


# A video's captions as one row (``captions``: JSON [start_s, end_s, text] lines) on its way
# to the summary actors; an error row says why there is nothing to summarize.
CAPTIONS_ROW_SCHEMA = pa.schema(
    [
        ("video_id", pa.string()),
        ("source", pa.string()),
        ("video_key", pa.string()),
        ("captions", pa.string()),
        ("caption_lines", pa.int32()),
        ("transcript", pa.string()),
        ("error_code", pa.string()),
        ("error_message", pa.string()),
        ("error_stage", pa.string()),
    ]
)


def captions_row(video: VideoCaptions, error: StageError | None = None) -> dict[str, Any]:
    return {
        "video_id": video.video_id,
        "source": video.source,
        "video_key": video.video_key,
        "captions": json.dumps([[x.start_s, x.end_s, x.text] for x in video.captions]),
        "caption_lines": len(video.captions),
        "transcript": video.transcript,
        "error_code": error.code.value if error else "",
        "error_message": error.message if error else "",
        "error_stage": error.stage if error else "",
    }


def captions_from_row(row: Mapping[str, Any]) -> VideoCaptions:
    lines = tuple(Line(s, e, t) for s, e, t in json.loads(str(row["captions"])))
    return VideoCaptions(
        str(row["video_id"]),
        str(row["source"]),
        str(row["video_key"]),
        lines,
        str(row.get("transcript") or ""),
    )


SUMMARY_DEFAULTS: dict[str, Any] = {
    "summary": "",
    "transcript_cues": 0,
    "lm_calls": 0,
    "levels": 0,
    "max_prompt_tokens": 0,
    "prompt_tokens": 0,
    "output_tokens": 0,
    "summarize_s": 0.0,
}


def summary_update(out: VideoSummary) -> dict[str, Any]:
    return {
        "summary": out.text,
        "transcript_cues": out.transcript_cues,
        "lm_calls": out.lm_calls,
        "levels": out.levels,
        "max_prompt_tokens": out.max_prompt_tokens,
        "prompt_tokens": out.prompt_tokens,
        "output_tokens": out.output_tokens,
        "summarize_s": out.summarize_s,
    }


class SummarizeStage(ModelStage[VideoCaptions, VideoSummary]):
    name = "summarize"
    codec = RowCodec(captions_from_row, summary_update, "captions", SUMMARY_DEFAULTS)

    def __init__(self, model: ModelConfig, pool: PoolConfig, summary: SummaryConfig) -> None:
        super().__init__(model, pool)
        self.summary = summary
        self.settings = GenerationConfig(max_new_tokens=summary.max_new_tokens)
        self._has_speech = True  # per video; True while sizing prompts is the safe side

    def setup(self) -> None:
        family = load_summary_lm(self.summary.model or self.model_config)
        family.load_lm()
        context = self.summary.context_tokens or family.max_positions
        # Prompt tokens allowed per call: what is left of the context after the output.
        self.budget = min(context, family.max_positions) - self.summary.max_new_tokens
        self.family = family
        # Reduce must make progress: a part's prompt must hold two summaries of the level below.
        two = [Line(0, 3599, "x" * 8)] * 2
        overhead = self._prompt_tokens(self._part_prompt(two)) - 2 * self._line_tokens(two[0])
        needed = overhead + 2 * (self.summary.max_new_tokens + self._line_tokens(two[0]))
        if needed > self.budget:
            raise ValueError(
                f"summary context of {self.budget + self.summary.max_new_tokens} tokens cannot "
                f"hold two {self.summary.max_new_tokens}-token summaries plus the prompt "
                f"({needed} + {self.summary.max_new_tokens} needed); raise context_tokens or "
                "lower the summary max_new_tokens"
            )

    def process_batch(
        self, items: Sequence[VideoCaptions], **options: Any
    ) -> list[VideoSummary | StageError]:
        return [self._summarize(video) for video in items]

    # -- one video ----------------------------------------------------------------------

    def _summarize(self, video: VideoCaptions) -> VideoSummary | StageError:
        started = time.perf_counter()
        cues: list = load_cues(video.source) if self.summary.transcript else []
        if not cues and self.summary.transcript:
            cues = list(segments_from_json(video.transcript))
        speech = [Line(c.start_s, c.end_s, c.text, speech=True) for c in cues if c.text]
        lines = sorted([*video.captions, *speech], key=lambda x: (x.start_s, x.speech))
        self._has_speech = bool(speech)
        tally = {"calls": 0, "max_prompt": 0, "prompt": 0, "output": 0}
        levels = 0
        while True:
            parts = self._pack(lines)
            if len(parts) == 1:
                [out] = self._generate([self._final_prompt(parts[0])], tally)
                break
            if levels == MAX_LEVELS:
                message = f"summary did not converge after {levels} reduce levels"
                return StageError(ErrorCode.MODEL_ERROR, message, self.name)
            outs = self._generate([self._part_prompt(p) for p in parts], tally)
            lines = []
            for part, out in zip(parts, outs, strict=True):
                if isinstance(out, StageError):
                    return out
                lines.append(Line(part[0].start_s, part[-1].end_s, out.text.strip()))
            levels += 1
        if isinstance(out, StageError):
            return out
        return VideoSummary(
            video=video,
            text=out.text.strip(),
            transcript_cues=len(speech),
            lm_calls=tally["calls"],
            levels=levels,
            max_prompt_tokens=tally["max_prompt"],
            prompt_tokens=tally["prompt"],
            output_tokens=tally["output"],
            summarize_s=time.perf_counter() - started,
        )

    def _generate(self, prompts: list[str], tally: dict) -> list[GenOutput | StageError]:
        outs = []
        for i in range(0, len(prompts), self.batch_size):
            outs += self.family.generate_text(prompts[i : i + self.batch_size], self.settings)
        for out in outs:
            tally["calls"] += 1
            if isinstance(out, GenOutput):
                tally["max_prompt"] = max(tally["max_prompt"], out.prompt_tokens)
                tally["prompt"] += out.prompt_tokens
                tally["output"] += len(out.token_ids)
        return outs

    # -- prompts and packing -------------------------------------------------------------

    def _fill(self, template: str, lines: Sequence[Line]) -> str:
        note = " and what is said in it (speech)" if self._has_speech else ""
        text = template.replace("{transcript}", note)
        if lines:
            text = text.replace("{start}", clock(lines[0].start_s))
            text = text.replace("{end}", clock(lines[-1].end_s))
        return text.replace("{lines}", "\n".join(line.render() for line in lines))

    def _final_prompt(self, lines: Sequence[Line]) -> str:
        return self._fill(self.summary.prompt, lines)

    def _part_prompt(self, lines: Sequence[Line]) -> str:
        return self._fill(self.summary.part_prompt, lines)

    def _prompt_tokens(self, prompt: str) -> int:
        return self.family.count_tokens(self.family.text_prompt(prompt))

    def _line_tokens(self, line: Line) -> int:
        return self.family.count_tokens(line.render() + "\n")

    def _cost(self, lines: Sequence[Line]) -> int:
        """Tokens of the longer of the two prompts these lines could go into."""
        return max(
            self._prompt_tokens(self._final_prompt(lines)),
            self._prompt_tokens(self._part_prompt(lines)),
        )

    def _fits(self, lines: Sequence[Line]) -> bool:
        return self._cost(lines) <= self.budget

    def _pack(self, lines: Sequence[Line]) -> list[list[Line]]:
        """Consecutive lines grouped into as few parts as fit the budget, in order."""
        room = self.budget - self._cost([])
        parts: list[list[Line]] = [[]]
        used = 0
        for line in self._split_long(lines, room):
            cost = self._line_tokens(line)
            if parts[-1] and used + cost > room:
                parts.append([])
                used = 0
            parts[-1].append(line)
            used += cost
        # Token counts of lines joined may differ from the sum by a merge at the seams:
        # check each part exactly and move lines on until it fits.
        checked: list[list[Line]] = []
        queue = parts
        while queue:
            part = queue.pop(0)
            spill: list[Line] = []
            while len(part) > 1 and not self._fits(part):
                spill.insert(0, part.pop())
            checked.append(part)
            if spill:
                queue.insert(0, spill)
        return checked

    def _split_long(self, lines: Sequence[Line], room: int) -> list[Line]:
        """Cut any line that would not fit a prompt alone into pieces that do."""
        tok = self.family.tokenizer
        out = []
        for line in lines:
            if self._line_tokens(line) <= room:
                out.append(line)
                continue
            label = self._line_tokens(Line(line.start_s, line.end_s, "", line.speech))
            ids = tok(line.text, add_special_tokens=False)["input_ids"]
            step = max(1, (room - label) * 3 // 4)  # re-tokenized pieces can grow a little
            for i in range(0, len(ids), step):
                piece = tok.decode(ids[i : i + step], skip_special_tokens=True)
                out.append(Line(line.start_s, line.end_s, piece, line.speech))
        return out
