"""Speech recognition with Whisper: a tiny offline builder and the batched recognizer.

``WhisperAsr.transcribe`` takes 16 kHz mono windows of at most 30 s and makes one
``generate`` call per batch, with ``force_unique_generate_call``: one decoding pass per
window, so every timestamp token is relative to that window's start (transformers' own
long-form loop would seek inside the window and restart the clock). Overlapping windows
and the choice of which window keeps a segment are the stage's business.

Segments are decoded here from the token ids, not by the tokenizer's offset helpers: a
random-weight model (and a real one on noise) emits any sequence, and every sequence must
give segments without raising (see ``decode_segments``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizerFast,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from pipelines.core.config import AsrConfig
from pipelines.core.errors import ErrorCode, StageError
from pipelines.models.base import pick_device, pick_dtype, rejected_inputs

AUDIO_RATE = 16000
TIME_PRECISION_S = 0.02  # one timestamp token step, as in every Whisper checkpoint
NUM_TIMESTAMPS = 1501  # <|0.00|> .. <|30.00|>
MAX_WINDOW_S = 30.0
TASKS = ("translate", "transcribe")
# Order of the hub checkpoints: text vocabulary, <|endoftext|>, <|startoftranscript|>, the
# languages, then these; timestamps come last, right after <|notimestamps|>, which is how
# ``generate`` finds them (no_timestamps_token_id + 1).
_TAIL_SPECIALS = ("<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>")

# Spoken-style sentences for the tiny byte-level BPE, so random logits decode to word pieces.
_CORPUS = """
Hello and welcome back to the channel, today we are going to look at something new.
So first of all, let me show you how this works, it is actually quite simple.
Thank you very much for watching, and see you next time.
Okay, now we turn the page and read the next paragraph out loud together.
The weather today is sunny with a light wind from the west in the afternoon.
Guten Tag, bonjour, buenos dias: many languages, one model.
""".strip().splitlines()


# ------------------------------------------------------------------------- tiny builder


def _tiny_tokenizer(vocab_size: int) -> WhisperTokenizerFast:
    bpe = Tokenizer(models.BPE(unk_token=None))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_CORPUS * 4, trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = WhisperTokenizerFast(vocab=state["vocab"], merges=merges)
    specials = [
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        *_TAIL_SPECIALS,
    ]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    timestamps = [f"<|{i * TIME_PRECISION_S:.2f}|>" for i in range(NUM_TIMESTAMPS)]
    tokenizer.add_tokens(timestamps)
    return tokenizer


def _generation_config(tokenizer, config: WhisperConfig) -> GenerationConfig:
    ids = tokenizer.convert_tokens_to_ids
    eos = ids("<|endoftext|>")
    return GenerationConfig(
        decoder_start_token_id=ids("<|startoftranscript|>"),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        max_length=config.max_target_positions,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids(f"<|{code}|>") for code in LANGUAGES},
        task_to_id={task: ids(f"<|{task}|>") for task in TASKS},
        no_timestamps_token_id=ids("<|notimestamps|>"),
        prev_sot_token_id=ids("<|startofprev|>"),
        max_initial_timestamp_index=50,  # the first timestamp is at most 1 s, as on the hub
        # The hub suppresses punctuation-like ids; the tiny vocab only the sentence starter.
        suppress_tokens=[ids("<|startoflm|>")],
        begin_suppress_tokens=[ids("Ġ"), eos],
        forced_decoder_ids=None,
        return_timestamps=False,
        alignment_heads=[[config.decoder_layers - 1, 0]],
        do_sample=False,
    )


def build_tiny_whisper(
    out_dir: str | Path,
    seed: int = 0,
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_mel_bins: int = 80,
    vocab_size: int = 400,
) -> Path:
    """A tiny random-weight multilingual Whisper with its processor and generation config,
    saved like a hub checkpoint (offline, seeded: same arguments, same folder)."""
    tokenizer = _tiny_tokenizer(vocab_size)
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    heads = max(2, hidden_size // 32)
    config = WhisperConfig(
        vocab_size=len(tokenizer),
        num_mel_bins=num_mel_bins,
        d_model=hidden_size,
        encoder_layers=num_layers,
        decoder_layers=num_layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=hidden_size * 2,
        decoder_ffn_dim=hidden_size * 2,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=tokenizer.convert_tokens_to_ids("<|startoftranscript|>"),
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Random init leaves logits nearly flat and the decoder nearly deaf to the encoder:
        # louder convolutions and cross-attention and wider logits make greedy output (and
        # the detected language) depend visibly on the audio, which the parity tests need.
        model.model.encoder.conv1.weight.mul_(10.0)
        model.model.encoder.conv2.weight.mul_(10.0)
        for layer in model.model.decoder.layers:
            layer.encoder_attn.out_proj.weight.mul_(3.0)
        model.proj_out.weight.mul_(40.0)
    model.generation_config = _generation_config(tokenizer, config)
    processor = WhisperProcessor(
        feature_extractor=WhisperFeatureExtractor(feature_size=num_mel_bins),
        tokenizer=tokenizer,
    )
    out = Path(out_dir)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# --------------------------------------------------------------------- timestamp decoding


@dataclass(frozen=True)
class WindowSegment:
    """Speech in one window, seconds from the window's start."""

    start_s: float
    end_s: float
    text: str


@dataclass(frozen=True)
class WindowTranscript:
    """What the model made of one window: the whole sequence (decoder prompt included, so
    the language and task tokens are kept), the language code and the segments."""

    token_ids: tuple[int, ...]
    language: str
    segments: tuple[WindowSegment, ...]


def decode_segments(
    token_ids: Sequence[int],
    *,
    timestamp_begin: int,
    text_end: int,
    window_s: float,
    decode: Callable[[list[int]], str],
) -> tuple[WindowSegment, ...]:
    """Segments of one window's generated ids (decoder prompt excluded); never raises.

    Ids below ``text_end`` are text, ids from ``timestamp_begin`` on are timestamps, the
    ones between are special tokens and are skipped (``<|endoftext|>`` ends the sequence).
    Text runs from the timestamp before it (0 when none) to the timestamp after it (the
    window's end when none: a trailing segment without a closing timestamp). Times are
    clamped to ``[0, window_s]`` and an end before its start is moved up to the start, so
    non-monotonic timestamps from an untrained or confused model still give valid segments.
    Segments whose text is blank are dropped.
    """
    segments: list[WindowSegment] = []
    start_s = 0.0
    text: list[int] = []

    def close(end_s: float) -> None:
        words = decode(text).strip()
        if words:
            segments.append(WindowSegment(start_s, max(start_s, end_s), words))
        text.clear()

    eos = text_end  # <|endoftext|> is the first id after the text vocabulary
    for token in token_ids:
        if token == eos:
            break
        if token >= timestamp_begin:
            time_s = min(max((token - timestamp_begin) * TIME_PRECISION_S, 0.0), window_s)
            if text:
                close(time_s)
            start_s = time_s
        elif token < text_end:
            text.append(token)
    if text:
        close(window_s)
    return tuple(segments)


# --------------------------------------------------------------------------- recognizer


class WhisperAsr:
    """A Whisper checkpoint that transcribes batches of 16 kHz mono windows (<= 30 s)."""

    stage = "transcribe"

    def __init__(self, config: AsrConfig) -> None:
        self.config = config
        self.device = pick_device(config.model.device)
        self.dtype = pick_dtype(config.model.dtype, self.device)

    def load(self) -> None:
        cfg = self.config.model
        self.processor = WhisperProcessor.from_pretrained(cfg.model, revision=cfg.revision)
        # transformers picks SDPA for Whisper by default wherever torch has it.
        model = WhisperForConditionalGeneration.from_pretrained(
            cfg.model, revision=cfg.revision, dtype=self.dtype
        )
        self.model = model.to(self.device).eval()
        gen = model.generation_config
        self.eos_id = int(gen.eos_token_id)
        self.timestamp_begin = int(gen.no_timestamps_token_id) + 1
        self.languages = {int(i): tok.strip("<|>") for tok, i in gen.lang_to_id.items()}

    def generate_kwargs(self) -> dict:
        """The ``generate`` settings of every batch (a parity test calls it directly)."""
        return {
            "return_timestamps": True,
            "task": "transcribe",
            "language": self.config.language,
            "max_new_tokens": self.config.max_new_tokens,
            # One decoding pass per window: timestamps stay relative to the window start.
            "force_unique_generate_call": True,
        }

    def features(self, windows: Sequence[np.ndarray]) -> torch.Tensor:
        """Log-mel input features of a batch; a window the extractor refuses is an ItemError."""
        with rejected_inputs("audio window"):
            out = self.processor.feature_extractor(
                list(windows), sampling_rate=AUDIO_RATE, return_tensors="pt"
            )
        return out.input_features.to(self.device, self.dtype)

    @torch.inference_mode()
    def transcribe(self, windows: Sequence[np.ndarray]) -> list[WindowTranscript | StageError]:
        """One result per window, same order; a window that is not audio is a StageError.

        Raises ``ItemError`` when the feature extractor refuses the batch: the caller reruns
        the windows one by one (``stages.isolate.run_isolated``) to find the culprit.
        """
        results: list[WindowTranscript | StageError | None] = [None] * len(windows)
        keep = []
        for i, window in enumerate(windows):
            if problem := _window_problem(window):
                results[i] = StageError(ErrorCode.MODEL_ERROR, problem, self.stage)
            else:
                keep.append(i)
        if keep:
            features = self.features([windows[i] for i in keep])
            sequences = self.model.generate(features, **self.generate_kwargs())
            for i, row in zip(keep, sequences.tolist(), strict=True):
                results[i] = self._window_result(row, len(windows[i]) / AUDIO_RATE)
        return results  # type: ignore[return-value]

    def _window_result(self, row: list[int], window_s: float) -> WindowTranscript:
        # Rows are right-padded with <|endoftext|>; the prompt is <|sot|> <|lang|> <|task|>.
        end = row.index(self.eos_id) if self.eos_id in row else len(row)
        ids = tuple(row[:end])
        language = self.languages.get(ids[1], "") if len(ids) > 1 else ""
        segments = decode_segments(
            ids[1:],  # the prompt's language and task tokens are special: skipped
            timestamp_begin=self.timestamp_begin,
            text_end=self.eos_id,
            window_s=window_s,
            decode=self.processor.tokenizer.decode,
        )
        return WindowTranscript(ids, language, segments)


def _window_problem(window: np.ndarray) -> str:
    """Why a window cannot be transcribed ('' when it can), for what the feature extractor
    would let through silently: nothing to hear, over 30 s (it cuts), NaN or infinity. What
    is not 1-D numeric audio it refuses itself (``features``)."""
    size = getattr(window, "size", 0)
    if size == 0:
        return "audio window is empty"
    if size > MAX_WINDOW_S * AUDIO_RATE:
        return f"audio window of {size / AUDIO_RATE:.1f} s exceeds {MAX_WINDOW_S} s"
    if np.issubdtype(window.dtype, np.number) and not np.isfinite(window).all():
        return "audio window holds NaN or infinite samples"
    return ""
