"""Tiny random-weight models built offline, for tests, the demo and benchmarks.

The hub is unreachable in CI and on many clusters, yet every code path must be exercised
through the same ``from_pretrained`` call a real checkpoint uses. So we build a complete
model folder — config, random weights, tokenizer (trained with the ``tokenizers`` library
on a small built-in corpus), processor and chat template — and save it with
``save_pretrained``. Weights are seeded, so the same arguments give the same folder.

Each family's builder is its ``build_tiny`` (in ``pipelines/models/<family>.py``); this
module holds what they share and the entry points keyed by ``model_type``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

# Enough English for byte-level BPE to learn word pieces, so random logits decode to
# readable fragments rather than raw bytes.
_CORPUS = """
A person walks across the room and opens the door. The camera pans slowly to the left.
A red car drives down a busy street at night while people cross the road.
Two children play with a ball in the park; a dog runs after them.
The video shows a kitchen where someone is cutting vegetables on a wooden board.
Describe this video. Summarize the clip. What happens in the scene? Answer the question.
A bird flies over the lake at sunset, and the water reflects the orange sky.
The speaker stands in front of a screen and points at a chart with rising numbers.
""".strip().splitlines()


def build_bpe_tokenizer(
    special_tokens: tuple[str, ...],
    *,
    eos: str,
    pad: str,
    bos: str | None = None,
    prepend_bos: bool = False,
    named: dict[str, str] | None = None,
    vocab_size: int = 640,
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer whose first ids are ``special_tokens``, in that order.

    ``named`` adds attributes the family's processor looks up (``image_token``,
    ``video_token``, ...), exactly as the hub tokenizers of that family declare them.
    With ``prepend_bos``, encoding prepends ``bos``, as Llama-family tokenizers do.
    """
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if prepend_bos:  # Llama-style: every encoded text starts with BOS
        bos_id = tok.token_to_id(bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, bos_id)]
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=bos,
        eos_token=eos,
        pad_token=pad,
        extra_special_tokens=named or {},
    )


def token_ids(tokenizer, tokens: Sequence[str]) -> dict[str, int]:
    return {t: tokenizer.convert_tokens_to_ids(t) for t in tokens}


def sharpen_and_save(model, processor, out: str | Path, *, eos_id: int, pad_id: int) -> Path:
    """Widen lm_head logits so greedy output depends on the pixels, then save both.

    Random init leaves logits nearly flat; widening them makes greedy decoding depend
    visibly on the video, which the split-vs-fused parity tests rely on.
    """
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.generation_config.do_sample = False
    out = Path(out)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def tiny_text_config(tokenizer, hidden_size: int, num_layers: int, **extra):
    """A small decoder config (Qwen2/Llama-style keys) sized for CPU tests."""
    heads = max(2, hidden_size // 32)
    return dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        **extra,
    )


class _TinyFamilies(Sequence):
    """The model types ``build_tiny_model`` accepts, looked up on first use.

    Listing them imports every family (torch and transformers, ~10 s), so a CLI can hand
    this to argparse as ``choices`` (with a ``metavar``) and pay only when it is read.
    """

    def _names(self) -> list[str]:
        from pipelines.models import supported_model_types

        return supported_model_types()

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


TINY_FAMILIES: Sequence[str] = _TinyFamilies()


def tiny_families() -> list[str]:
    """Every model type with a tiny builder: every registered family."""
    return list(TINY_FAMILIES)


def build_tiny_model(family: str, out_dir: str | Path, **options) -> Path:
    """Build the tiny model of ``family`` (a ``config.model_type``) into ``out_dir``."""
    from pipelines.models import family_for_model_type

    if family not in TINY_FAMILIES:
        raise ValueError(f"no tiny builder for {family!r}; choose one of {tiny_families()}")
    return family_for_model_type(family).build_tiny(out_dir, **options)
