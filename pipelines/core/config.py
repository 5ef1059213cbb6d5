"""Typed, validated configuration for every stage and for the job.

Each field carries its unit in its name and a docstring; unknown keys are refused, so a
typo in a config file fails at start instead of being silently ignored.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class DecodeConfig(_Config):
    """How videos are opened, chunked into clips and sampled into frames (CPU, PyAV)."""

    clip_s: float = Field(default=10.0, gt=0, le=3600)
    """Length of each fixed clip window, in seconds; the last clip may be shorter."""

    fps: float | None = Field(default=2.0, gt=0, le=60)
    """Frames sampled per second of video inside each clip (exclusive with num_frames)."""

    num_frames: int | None = Field(default=None, ge=1, le=1024)
    """Fixed number of frames per clip, spread evenly over it (exclusive with fps)."""

    min_frames: int = Field(default=4, ge=1, le=1024)
    """Fewest frames per clip; short clips repeat their nearest frames to reach it."""

    max_frames: int = Field(default=64, ge=1, le=1024)
    """Most frames per clip; bounds memory and visual tokens."""

    frame_factor: int | None = Field(default=None, ge=1, le=16)
    """Frame counts are rounded to a multiple of this; None takes the model family's (Qwen-VL
    groups 2 frames per patch: 2; most others: 1)."""

    max_side_px: int = Field(default=448, ge=16, le=8192)
    """Frames are scaled in the decoder so their longer side is at most this many pixels."""

    max_file_bytes: int = Field(default=8 * 1024**3, ge=1)
    """Inputs larger than this are refused with ``too_large`` before decoding."""

    max_duration_s: float = Field(default=6 * 3600.0, gt=0)
    """Inputs longer than this are refused with ``too_long`` before decoding."""

    max_frame_pixels: int = Field(default=8192 * 8192, ge=1)
    """Streams whose declared width x height exceeds this are refused with ``too_large``."""

    timeout_s: float = Field(default=600.0, gt=0)
    """Wall-clock budget to decode one video; past it the rest becomes ``decode_timeout``."""

    decode_mode: Literal["exact", "keyframes"] = "exact"
    """``exact``: each sample is the decoded frame nearest its target time. ``keyframes``: only
    keyframes are decoded (much faster, for very large corpora); each sample is the keyframe
    nearest its target and ``DecodedClip.frame_offset_s`` reports the timestamp error."""

    seek_min_gap_s: float = Field(default=2.0, gt=0, le=86400)
    """Seek to the keyframe before the next target instead of decoding up to it when it lies
    more than this many seconds (and two observed keyframe intervals) ahead."""

    nonref_margin_s: float = Field(default=0.04, ge=0, le=10)
    """Non-reference frames farther than this (or one nominal source frame interval, if longer)
    from every target are not decoded; 0 decodes every frame. A pick within this distance of
    its target is provably the one a full decode makes, which holds for every constant-rate
    source."""

    chunking: Literal["fixed", "scenes", "none"] = "fixed"
    """``fixed``: windows of ``clip_s`` (overlapping by ``overlap_s``). ``scenes``: cut where the
    picture changes, then merge scenes shorter than ``min_clip_s`` and split ones longer than
    ``max_clip_s``. ``none``: the whole video is one clip (``max_frames`` still applies)."""

    overlap_s: float = Field(default=0.0, ge=0, le=3600)
    """Seconds by which consecutive ``fixed`` windows overlap; must be below ``clip_s``."""

    min_clip_s: float = Field(default=2.0, gt=0, le=3600)
    """``scenes``: a scene shorter than this is merged into the next one (the last into the
    previous one)."""

    max_clip_s: float = Field(default=60.0, gt=0, le=3600)
    """``scenes``: a scene longer than this is split into equal parts no longer than it."""

    scene_threshold: float = Field(default=20.0, gt=0, le=255)
    """``scenes``: a cut is where the mean absolute difference between consecutive 32x18 grey
    thumbnails (0-255 scale) exceeds this."""

    @model_validator(mode="after")
    def _check(self) -> DecodeConfig:
        if (self.fps is None) == (self.num_frames is None):
            raise ValueError("set exactly one of fps or num_frames (set the other to null)")
        if self.min_frames > self.max_frames:
            raise ValueError(f"min_frames={self.min_frames} exceeds max_frames={self.max_frames}")
        if self.overlap_s >= self.clip_s:
            raise ValueError(f"overlap_s={self.overlap_s} must be below clip_s={self.clip_s}")
        if self.min_clip_s > self.max_clip_s:
            raise ValueError(f"min_clip_s={self.min_clip_s} exceeds max_clip_s={self.max_clip_s}")
        if self.frame_factor is not None and self.max_frames < self.frame_factor:
            raise ValueError(
                f"max_frames={self.max_frames} is below frame_factor={self.frame_factor}"
            )
        return self


# Apache-2.0, native video input with M-RoPE, ~2.2B parameters: fits one 16 GB GPU in
# bf16 and still runs (slowly) on CPU. Qwen2.5-VL-3B is stronger but under a research-only
# licence, which a corpus job's default should not impose on its users.
DEFAULT_MODEL = "Qwen/Qwen2-VL-2B-Instruct"


class ModelConfig(_Config):
    """Which checkpoint to load and where to run it."""

    model: str = Field(default=DEFAULT_MODEL, min_length=1)
    """A Hugging Face hub id or a local folder written by ``save_pretrained``."""

    revision: str | None = None
    """Hub revision (branch, tag or commit); None means the default branch."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """``auto`` uses CUDA when torch sees a GPU in the worker, else the CPU."""

    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto`` is bfloat16 on CUDA and float32 on CPU."""


class GenerationConfig(_Config):
    """Decoding settings of the language-model stage."""

    max_new_tokens: int = Field(default=128, ge=1, le=8192)
    """Most tokens generated per clip and prompt."""

    temperature: float = Field(default=0.0, ge=0.0, le=5.0)
    """0 means greedy decoding (deterministic, reproducible across runs)."""

    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass; only used when temperature > 0."""

    seed: int = Field(default=0, ge=0)
    """Seed for sampling when temperature > 0."""

    kv_cache: Literal["dynamic", "static"] = "dynamic"
    """``static``: the LM's KV cache is allocated once per batch at prompt + max_new_tokens,
    so every decode step has the same shapes (what ``compile`` needs); same tokens."""

    compile: bool = False
    """Compile the LM's decode step (torch.compile; CUDA graphs on a GPU); implies a static
    KV cache. The first batch of each shape pays the compile; later ones launch one graph
    per token instead of hundreds of kernels."""


class PoolConfig(_Config):
    """Size and batching of one model stage's actor pool."""

    min_actors: int = Field(default=1, ge=1, le=1024)
    """Actors kept alive for the whole job."""

    max_actors: int = Field(default=1, ge=1, le=1024)
    """Ray Data may grow the pool up to this many actors when the stage is the bottleneck."""

    batch_size: int = Field(default=4, ge=1, le=1024)
    """Clips per forward call."""

    num_gpus: float | None = Field(default=None, ge=0, le=8)
    """GPUs per actor; None: a whole GPU when the cluster's GPUs hold every pool's minimum
    actors, else a share of one (the LM the larger part), none without GPUs."""

    num_cpus: float = Field(default=1.0, gt=0, le=256)
    """CPUs per actor."""

    batch_tokens: int | None = Field(default=None, ge=1, le=100_000_000)
    """Language model: token budget of one generate call, rows x (longest prompt +
    max_new_tokens); the actor then takes 4 x batch_size rows at a time and cuts them into
    calls of similar prompt lengths (fewer pad tokens). None: batch_size rows per call."""

    @model_validator(mode="after")
    def _check(self) -> PoolConfig:
        if self.min_actors > self.max_actors:
            raise ValueError(f"min_actors={self.min_actors} exceeds max_actors={self.max_actors}")
        return self


DEFAULT_PROMPT = "Describe what happens in this video clip in one or two sentences."

Prompt = Annotated[str, Field(min_length=1, max_length=8192)]


DEFAULT_SUMMARY_PROMPT = (
    "Below are timestamped descriptions of consecutive clips of one video{transcript}.\n\n"
    "{lines}\n\nWrite a summary of the whole video in a few sentences."
)
DEFAULT_PART_PROMPT = (
    "Below are timestamped descriptions of part of a video, from {start} to {end}"
    "{transcript}.\n\n{lines}\n\nSummarize this part in a few sentences."
)


class SummaryConfig(_Config):
    """The text-only step that turns a video's timestamped clip captions into one summary.

    When the captions (and transcript) do not fit the model's context, they are summarized
    in parts that fit, and the parts' summaries again, until one prompt holds everything
    (map-reduce: nothing is truncated).
    """

    prompt: str = Field(default=DEFAULT_SUMMARY_PROMPT, min_length=1, max_length=8192)
    """Final prompt; ``{lines}`` receives the timestamped lines, ``{transcript}`` a note when
    speech lines are included."""

    part_prompt: str = Field(default=DEFAULT_PART_PROMPT, min_length=1, max_length=8192)
    """Prompt for one part; also gets ``{start}`` and ``{end}`` (mm:ss)."""

    max_new_tokens: int = Field(default=256, ge=8, le=8192)
    """Most tokens per summary (final and partial)."""

    context_tokens: int | None = Field(default=None, ge=64)
    """Prompt + output token budget per LM call; None uses the model's whole context."""

    transcript: bool = True
    """Add speech lines from the video's subtitles (sidecar .srt/.vtt, or a text stream)."""

    model: ModelConfig | None = None
    """Model that writes the summaries: a chat VLM family or any text chat model
    (``AutoModelForCausalLM`` with a chat template); None uses the captioning model."""

    @model_validator(mode="after")
    def _check(self) -> SummaryConfig:
        for name, text in (("prompt", self.prompt), ("part_prompt", self.part_prompt)):
            if "{lines}" not in text:
                raise ValueError(f"summary {name} must contain {{lines}}")
        return self


# MIT licence, multilingual, timestamps; large-v3 quality with 4 decoder layers instead of
# 32, so decoding (the ASR stage's cost) is several times faster. A GPU runs it well; on a
# CPU a smaller checkpoint (openai/whisper-small, -base) is the practical choice.
DEFAULT_ASR_MODEL = "openai/whisper-large-v3-turbo"


class AsrConfig(_Config):
    """Speech recognition: a Whisper checkpoint transcribes each video's audio track.

    Audio is decoded on the CPU decode tasks (16 kHz mono) in windows of ``window_s``
    that overlap by ``overlap_s``; an actor pool of its own runs the model. Transcripts
    are written to ``transcripts/`` and become the clips' speech context when a video
    has no subtitles.
    """

    model: ModelConfig = ModelConfig(model=DEFAULT_ASR_MODEL)
    """Any transformers Whisper checkpoint (hub id or local folder)."""

    pool: PoolConfig = PoolConfig(batch_size=8)
    """Actor pool of the speech-recognition stage (``batch_size``: audio windows per call)."""

    language: str | None = Field(default=None, min_length=2, max_length=16)
    """Spoken language as Whisper names it (``en``, ``german``); None lets the model detect it."""

    window_s: float = Field(default=30.0, ge=5.0, le=30.0)
    """Audio per model call, seconds (Whisper's input is at most 30 s)."""

    overlap_s: float = Field(default=5.0, ge=0.0, le=10.0)
    """Seconds shared by consecutive windows; a segment belongs to the window that holds its
    middle away from the overlap, so words cut at a window edge are kept once."""

    max_new_tokens: int = Field(default=224, ge=1, le=440)
    """Most tokens (text and timestamps) generated per window."""

    @model_validator(mode="after")
    def _check(self) -> AsrConfig:
        if self.overlap_s * 2 >= self.window_s:
            raise ValueError(f"overlap_s={self.overlap_s} must be below half of window_s")
        return self


DEFAULT_SPEECH_TEMPLATE = "Speech during this clip:\n{speech}"
DEFAULT_VIDEO_TEMPLATE = "About this video: {context}"


class ContextConfig(_Config):
    """The text that comes with a video, in each clip's caption and question prompts.

    ``speech`` is the clip's own subtitle cues or transcript segments (those overlapping its
    time range); ``context`` is the manifest's free text for the video (a title, a
    description). A prompt that holds ``{speech}`` or ``{context}`` gets them in place;
    otherwise each non-empty one is added after the prompt through its template.
    """

    source: Literal["none", "subtitles", "transcript", "auto"] = "auto"
    """Where a clip's speech comes from: ``subtitles`` (manifest ``subtitles`` file, else a
    sidecar .srt/.vtt, else a text stream in the container), ``transcript`` (speech
    recognition, needs ``--asr``), ``auto`` (subtitles when the video has them, else its
    transcript when speech recognition is on), ``none``."""

    speech_template: str = Field(default=DEFAULT_SPEECH_TEMPLATE, min_length=1, max_length=4096)
    """Block added after the prompt when the clip has speech; must hold ``{speech}``."""

    video_template: str = Field(default=DEFAULT_VIDEO_TEMPLATE, min_length=1, max_length=4096)
    """Block added after the prompt when the video has manifest context; must hold
    ``{context}``."""

    max_tokens: int = Field(default=256, ge=0, le=32768)
    """Token budget of the context (speech and manifest text together); text past it is cut
    and the cut recorded in ``context_cut_tokens``. 0 gives no context at all."""

    @model_validator(mode="after")
    def _check(self) -> ContextConfig:
        if "{speech}" not in self.speech_template:
            raise ValueError("context speech_template must contain {speech}")
        if "{context}" not in self.video_template:
            raise ValueError("context video_template must contain {context}")
        return self


class JobConfig(_Config):
    """One offline captioning job: inputs, output, and every stage's settings."""

    inputs: list[str] = Field(min_length=1)
    """Files, directories, globs, manifests (.parquet/.jsonl/.csv) or URIs."""

    out: str = Field(min_length=1)
    """Output directory or URI; receives ``clips/`` and ``summary.json``."""

    prompts: list[Prompt] = [DEFAULT_PROMPT]
    """Prompts for every clip, each answered from the clip's one encoding, unless the
    manifest gives the video its own prompts or questions."""

    questions: list[Prompt] = []
    """Questions asked of every clip of every video (task ``qa``), after the prompts."""

    decode: DecodeConfig = DecodeConfig()
    """Decode, chunking and sampling settings."""

    model: ModelConfig = ModelConfig()
    """Which model runs both model stages."""

    generation: GenerationConfig = GenerationConfig()
    """Decoding settings of the language-model stage."""

    encoder: PoolConfig = PoolConfig(batch_size=4)
    """Actor pool of the vision-encoder stage."""

    lm: PoolConfig = PoolConfig(batch_size=4)
    """Actor pool of the language-model stage."""

    decode_cpus: float = Field(default=1.0, gt=0, le=64)
    """CPUs per decode task."""

    address: str | None = None
    """Ray address to join (``auto``, ``ray://host:10001``); None starts a local Ray."""

    fail_on_error: bool = False
    """Exit non-zero when any row carries an error (the job still writes every row)."""

    overwrite: bool = False
    """Delete what ``out`` holds and start clean (else a rerun resumes, same settings only)."""

    video_key: Literal["stat", "content"] = "stat"
    """Input identity for resume: path+size+mtime, or a hash of the bytes (reads each file)."""

    max_attempts: int = Field(default=3, ge=1, le=20)
    """Decode attempts per video that may kill their worker before it is quarantined."""

    stall_timeout_s: float = Field(default=1800.0, gt=0, le=86400)
    """Fail the job, naming the stuck stage, when no row arrives for this long."""

    commit_interval_s: float = Field(default=30.0, ge=0, le=3600)
    """Commit finished videos at least this often (bounds rework after a crash)."""

    rows_per_shard: int = Field(default=5000, ge=1, le=10_000_000)
    """Commit a shard once this many rows of finished videos are waiting."""

    summarize: SummaryConfig | None = None
    """Also write ``videos/``: one summary per video from its clip captions (None: off)."""

    context: ContextConfig = ContextConfig()
    """The video's text (subtitles, transcript, manifest context) in each clip's prompt."""

    asr: AsrConfig | None = None
    """Speech recognition (Whisper) as a third model stage; None: off."""

    @model_validator(mode="after")
    def _check(self) -> JobConfig:
        if self.context.source == "transcript" and self.asr is None:
            raise ValueError("context source 'transcript' needs speech recognition (--asr)")
        asks = self.prompts + self.questions
        if not asks:
            raise ValueError("give at least one prompt or question")
        if len(set(asks)) != len(asks):
            raise ValueError("a prompt or question appears twice")
        return self
