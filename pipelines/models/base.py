"""What a model family must provide to run as two stages: encode, then generate.

The encoder half turns sampled frames into whatever the language model consumes
(visual embeddings plus the small tensors needed to place them), returned as a flat
``dict[str, torch.Tensor]`` that crosses the stage boundary serialized with safetensors.
The language-model half builds the family's chat prompt around those tensors and
generates. Each half loads only the weights it uses.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pipelines.core.config import GenerationConfig, ModelConfig
from pipelines.core.errors import ErrorCode, StageError


@dataclass(frozen=True)
class FramesInput:
    """Sampled frames of one clip and the rate they were sampled at."""

    frames: np.ndarray  # uint8 (N, H, W, 3)
    sampled_fps: float


@dataclass(frozen=True)
class GenRequest:
    encoded: dict[str, torch.Tensor]
    prompt: str
    history: tuple[tuple[str, str], ...] = ()
    """Earlier (user, assistant) turns about the same video, oldest first (chat follow-ups)."""


@dataclass(frozen=True)
class GenOutput:
    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int


@dataclass(frozen=True)
class SamplingHints:
    """Frame-count rules the family imposes on the decode stage."""

    min_frames: int = 1
    frame_factor: int = 1


@dataclass(frozen=True)
class FamilyDoc:
    """One row of the README's model-family table (generated from the registry)."""

    name: str
    hub_ids: str
    video_route: str
    crosses: str
    """What crosses encoder -> LM for one clip of the tiny model."""
    model_type_note: str = ""
    """Which checkpoints of the ``model_type`` the row is about, when it has several rows."""


class ItemError(Exception):
    """Raised by family code that knows this item's input is at fault (and not the code or
    the worker); the stage writes it as the item's ``StageError``. Every other exception
    propagates: a bug must not pass as a data error."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@contextmanager
def rejected_inputs(what: str) -> Iterator[None]:
    """A processor's ``ValueError`` on one batch's frames or text becomes an ``ItemError``.

    Processors check what they are handed (frame sizes, aspect ratios) with ``ValueError``;
    only the calls that turn items into tensors are wrapped, so a ``ValueError`` anywhere
    else is still a bug. On a batch, the stage retries item by item to find the culprit.
    """
    try:
        yield
    except ValueError as exc:
        raise ItemError(ErrorCode.MODEL_ERROR, f"{what}: {exc}") from exc


def pick_device(requested: str) -> torch.device:
    """Choose the torch device from what torch itself sees in this process.

    Ray's GPU bookkeeping can say a GPU was granted on a node that has none usable; the
    model must still land where torch can run it.
    """
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "cuda":
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA device here")
    return torch.device("cpu")


def decoding_kwargs(settings: GenerationConfig) -> dict:
    """``generate`` keyword arguments for the settings (seeding torch when sampling)."""
    sampling = settings.temperature > 0
    if sampling:
        torch.manual_seed(settings.seed)
    kwargs: dict = {
        "max_new_tokens": settings.max_new_tokens,
        "do_sample": sampling,
        "temperature": settings.temperature if sampling else None,
        "top_p": settings.top_p if sampling else None,
        "top_k": None,
    }
    if settings.kv_cache == "static" or settings.compile:  # compiling needs fixed shapes
        kwargs["cache_implementation"] = "static"
        # transformers compiles a static-cache generate on CUDA by itself: only when asked.
        kwargs["disable_compile"] = not settings.compile
    if settings.compile:
        from transformers import CompileConfig

        # reduce-overhead = CUDA graphs: one launch per decode step. Shapes vary with
        # batch and prompt length, so dynamic=None lets dynamo mark what changes.
        config = CompileConfig(mode="reduce-overhead" if torch.cuda.is_available() else "default")
        config._compile_all_devices = True  # on CPU too (transformers' auto-compile is CUDA-only)
        kwargs["compile_config"] = config
    return kwargs


def stop_ids(generation_config, *extra: int | None) -> set[int]:
    """End-of-sequence and padding ids: where a generated row's text ends."""
    eos = generation_config.eos_token_id
    eos = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    return {*eos, generation_config.pad_token_id, *extra} - {None}


def until_stop(row: Sequence[int], stop: set[int]) -> list[int]:
    tokens = []
    for t in row:
        if t in stop:
            break
        tokens.append(t)
    return tokens


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return getattr(torch, requested)


class VideoLMFamily(abc.ABC):
    """One model family (one ``config.model_type``) split into two halves, with its tiny model.

    A registered family defines ``model_type``, ``docs`` and ``build_tiny`` on its own class
    (not inherited: a subclass of another family is another model and needs its own).
    """

    model_type: ClassVar[str]
    docs: ClassVar[tuple[FamilyDoc, ...]]
    tiny_variants: ClassVar[tuple[dict[str, Any], ...]] = ({},)
    """``build_tiny`` options that each give a distinct model (e.g. another encoder kind);
    every variant gets the parity and the offline/online tests."""
    hints: ClassVar[SamplingHints] = SamplingHints()
    supports_chat: ClassVar[bool] = False
    """True when the LM has a chat template: multi-turn follow-ups and text-only prompts
    (video summaries) work, through ``GenRequest.history`` and ``generate_text``."""

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(config.dtype, self.device)

    @classmethod
    @abc.abstractmethod
    def build_tiny(cls, out_dir: str | Path, **options: Any) -> Path:
        """Build a tiny random-weight model of this family into ``out_dir`` (offline, seeded),
        loadable with the same ``from_pretrained`` calls as a hub checkpoint."""

    @abc.abstractmethod
    def load_encoder(self) -> None:
        """Load the processor and the vision tower (+ projector) only."""

    @abc.abstractmethod
    def encode(self, clips: Sequence[FramesInput]) -> list[dict[str, torch.Tensor]]:
        """Run the vision side for a batch of clips; one dict of CPU tensors per clip."""

    @abc.abstractmethod
    def load_lm(self) -> None:
        """Load the tokenizer/processor and the language model only."""

    @property
    @abc.abstractmethod
    def tokenizer(self):
        """The tokenizer that decodes this family's generated ids (for streaming)."""

    @abc.abstractmethod
    def generate(
        self, requests: Sequence[GenRequest], settings: GenerationConfig, streamer=None
    ) -> list[GenOutput | StageError]:
        """Generate text for each request; per-item input problems become StageErrors.

        ``streamer`` (a transformers ``BaseStreamer``) receives tokens as they are
        generated; it is only passed for a single request.
        """

    def generate_text(
        self, prompts: Sequence[str], settings: GenerationConfig
    ) -> list[GenOutput | StageError]:
        """Text-only chat turns (no video), for families with ``supports_chat``."""
        raise NotImplementedError(f"{type(self).__name__} cannot generate from text alone")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])
