"""Tiny random-weight models built offline, for tests, the demo and benchmarks.

The hub is unreachable in CI and on many clusters, yet every code path must be exercised
through the same ``from_pretrained`` call a real checkpoint uses. So we build a complete
model folder — config, random weights, tokenizer (trained with the ``tokenizers`` library
on a small built-in corpus), processor and chat template — and save it with
``save_pretrained``. Weights are seeded, so the same arguments give the same folder.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Qwen2-VL's special tokens; their ids are 0..6 in the tiny vocabulary.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# The Qwen2-VL chat format: system turn by default, vision placeholders in user turns.
QWEN_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif part['type'] == 'video' %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

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


def build_tokenizer(vocab_size: int = 640) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(QWEN_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )


def build_qwen_vl(
    out_dir: str | Path,
    *,
    family: str = "qwen2_vl",
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_dim: int = 32,
    vision_depth: int = 2,
    seed: int = 0,
) -> Path:
    """Build a tiny Qwen2-VL (``qwen2_vl``) or Qwen2.5-VL (``qwen2_5_vl``) into ``out_dir``."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessor,
        Qwen2VLProcessor,
        Qwen2VLVideoProcessor,
    )

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    heads = max(2, hidden_size // 32)
    head_dim = hidden_size // heads
    # M-RoPE splits each head's rotary half into (temporal, height, width) sections.
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=max(1, heads // 2),
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    vision = dict(
        depth=vision_depth, num_heads=2, patch_size=14, spatial_merge_size=2, temporal_patch_size=2
    )
    if family == "qwen2_vl":
        vision.update(embed_dim=vision_dim, hidden_size=hidden_size, mlp_ratio=2)
        config_cls, model_cls, proc_cls = (
            Qwen2VLConfig,
            Qwen2VLForConditionalGeneration,
            Qwen2VLProcessor,
        )
    elif family == "qwen2_5_vl":
        vision.update(
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            out_hidden_size=hidden_size,
            window_size=56,
            fullatt_block_indexes=[vision_depth - 1],
        )
        config_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
        proc_cls = Qwen2_5_VLProcessor
    else:
        raise ValueError(f"build_qwen_vl: family must be qwen2_vl or qwen2_5_vl, got {family!r}")
    config = config_cls(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(seed)
    model = model_cls(config).eval()
    # Random init leaves logits nearly flat; widening them makes greedy decoding depend
    # visibly on the video, which the split-vs-fused parity test relies on.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    model.generation_config.eos_token_id = ids["<|im_end|>"]
    model.generation_config.pad_token_id = ids["<|endoftext|>"]
    model.generation_config.do_sample = False
    # Small pixel budgets keep the tiny model fast on CPU; real checkpoints ship their own.
    pixels = dict(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    processor = proc_cls(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


FAMILIES = {"qwen2_vl": build_qwen_vl, "qwen2_5_vl": build_qwen_vl}


def build_tiny_model(family: str, out_dir: str | Path, **sizes: int) -> Path:
    """Build the tiny model of ``family`` (a ``config.model_type``) into ``out_dir``."""
    if family not in FAMILIES:
        raise ValueError(f"no tiny builder for {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family](out_dir, family=family, **sizes)
