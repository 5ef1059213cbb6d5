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
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
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


def _sharpen_and_save(model, processor, out: Path, *, eos_id: int, pad_id: int) -> Path:
    """Widen lm_head logits so greedy output depends on the pixels, then save both."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(40.0)
    model.generation_config.eos_token_id = eos_id
    model.generation_config.pad_token_id = pad_id
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _tiny_text_config(tokenizer, hidden_size: int, num_layers: int, **extra):
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


# LLaVA-OneVision (Qwen2 LM): ChatML turns, <video>/<image> placeholders before the text.
LLAVA_OV_SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
LLAVA_OV_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'video' %}<video>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_llava_onevision(
    out_dir: str | Path,
    *,
    family: str = "llava_onevision",
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_dim: int = 32,
    vision_depth: int = 2,
    image_size: int = 56,
    seed: int = 0,
) -> Path:
    """Build a tiny LLaVA-OneVision (SigLIP tower, 2x2-pooled video tokens, Qwen2 LM)."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    out = Path(out_dir)
    tokenizer = build_bpe_tokenizer(
        LLAVA_OV_SPECIAL_TOKENS,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        named={"image_token": "<image>", "video_token": "<video>"},
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAVA_OV_SPECIAL_TOKENS}
    patch = 14
    # A few any-res tiles at this size keep the (unused here) image path loadable.
    pinpoints = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
    config = LlavaOnevisionConfig(
        text_config=dict(
            model_type="qwen2",
            **_tiny_text_config(tokenizer, hidden_size, num_layers),
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            num_hidden_layers=vision_depth,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
            vision_use_head=False,
        ),
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
        image_grid_pinpoints=pinpoints,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    size = {"height": image_size, "width": image_size}
    processor = LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(size=size, image_grid_pinpoints=pinpoints),
        video_processor=LlavaOnevisionVideoProcessor(size=size),
        tokenizer=tokenizer,
        num_image_tokens=(image_size // patch) ** 2,
        vision_feature_select_strategy="full",
        chat_template=LLAVA_OV_CHAT_TEMPLATE,
    )
    return _sharpen_and_save(
        model, processor, out, eos_id=ids["<|im_end|>"], pad_id=ids["<|endoftext|>"]
    )


# LLaVA-NeXT-Video (Vicuna/Llama LM): "USER: <video>\n{text} ASSISTANT:", BOS prepended.
LLAVA_NEXT_VIDEO_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<video>", "<image>")
LLAVA_NEXT_VIDEO_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'].upper() + ': ' }}{% endif %}"
    "{% if message['content'] is string %}{{ message['content'] + ' ' }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}<image>\n"
    "{% elif part['type'] == 'video' %}<video>\n"
    "{% elif part['type'] == 'text' %}{{ part['text'] + ' ' }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def build_llava_next_video(
    out_dir: str | Path,
    *,
    family: str = "llava_next_video",
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_dim: int = 32,
    vision_depth: int = 2,
    image_size: int = 56,
    seed: int = 0,
) -> Path:
    """Build a tiny LLaVA-NeXT-Video (CLIP tower, 2x2 average-pooled frames, Llama LM)."""
    from transformers import (
        LlavaNextImageProcessor,
        LlavaNextVideoConfig,
        LlavaNextVideoForConditionalGeneration,
        LlavaNextVideoProcessor,
        LlavaNextVideoVideoProcessor,
    )

    out = Path(out_dir)
    tokenizer = build_bpe_tokenizer(
        LLAVA_NEXT_VIDEO_SPECIAL_TOKENS,
        bos="<s>",
        prepend_bos=True,
        eos="</s>",
        pad="<unk>",
        named={"image_token": "<image>", "video_token": "<video>"},
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in LLAVA_NEXT_VIDEO_SPECIAL_TOKENS}
    patch = 14
    pinpoints = [[image_size * h, image_size * w] for h in (1, 2) for w in (1, 2)]
    tokens_per_frame = (image_size // patch) ** 2
    config = LlavaNextVideoConfig(
        text_config=dict(
            model_type="llama",
            **_tiny_text_config(tokenizer, hidden_size, num_layers),
            bos_token_id=ids["<s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<unk>"],
        ),
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            num_hidden_layers=vision_depth,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
            projection_dim=vision_dim,
        ),
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
        image_grid_pinpoints=pinpoints,
        image_seq_length=tokens_per_frame,
        video_seq_length=tokens_per_frame // 4,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlavaNextVideoForConditionalGeneration(config).eval()
    crop = {"height": image_size, "width": image_size}
    processor = LlavaNextVideoProcessor(
        video_processor=LlavaNextVideoVideoProcessor(
            size={"shortest_edge": image_size}, crop_size=crop
        ),
        image_processor=LlavaNextImageProcessor(
            size={"shortest_edge": image_size}, crop_size=crop, image_grid_pinpoints=pinpoints
        ),
        tokenizer=tokenizer,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token
        chat_template=LLAVA_NEXT_VIDEO_CHAT_TEMPLATE,
    )
    return _sharpen_and_save(model, processor, out, eos_id=ids["</s>"], pad_id=ids["<unk>"])


# SmolVLM2 (SmolLM2 LM): "User: ...<end_of_utterance>\nAssistant:"; each video frame becomes a
# timestamped image block that the processor writes in place of <video>.
SMOLVLM_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<end_of_utterance>",
    "<fake_token_around_image>",
    "<global-img>",
    "<image>",
    "<video>",
)
SMOLVLM_CHAT_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}{{ ': ' + message['content'] }}"
    "{% else %}{% if message['content'][0]['type'] == 'image' %}{{ ':' }}"
    "{% else %}{{ ': ' }}{% endif %}"
    "{% for part in message['content'] %}"
    "{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] == 'image' %}<image>"
    "{% elif part['type'] == 'video' %}<video>{% endif %}"
    "{% endfor %}{% endif %}<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_smolvlm(
    out_dir: str | Path,
    *,
    family: str = "smolvlm",
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_dim: int = 32,
    vision_depth: int = 2,
    image_size: int = 64,
    seed: int = 0,
) -> Path:
    """Build a tiny SmolVLM2 (SigLIP-style tower, pixel-shuffle connector, Llama LM)."""
    from transformers import (
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
        SmolVLMImageProcessor,
        SmolVLMProcessor,
        SmolVLMVideoProcessor,
    )

    out = Path(out_dir)
    tokenizer = build_bpe_tokenizer(
        SMOLVLM_SPECIAL_TOKENS,
        bos="<|im_start|>",
        eos="<end_of_utterance>",
        pad="<|im_end|>",
        named={
            "image_token": "<image>",
            "video_token": "<video>",
            "fake_image_token": "<fake_token_around_image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
        },
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SMOLVLM_SPECIAL_TOKENS}
    patch, scale = 16, 2
    config = SmolVLMConfig(
        text_config=dict(
            model_type="llama",
            **_tiny_text_config(tokenizer, hidden_size, num_layers),
            bos_token_id=ids["<|im_start|>"],
            eos_token_id=ids["<end_of_utterance>"],
            pad_token_id=ids["<|im_end|>"],
        ),
        vision_config=dict(
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            num_hidden_layers=vision_depth,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=patch,
        ),
        image_token_id=ids["<image>"],
        scale_factor=scale,
        pad_token_id=ids["<|im_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = SmolVLMForConditionalGeneration(config).eval()
    # Frames are squared to image_size; the hub's video_sampling block sets the defaults
    # the processor's own frame sampler would use (the pipeline samples frames itself).
    edge = {"longest_edge": image_size}
    sampling = {"fps": 1, "max_frames": 64, "video_size": edge}
    processor = SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(
            size=edge, max_image_size=edge, do_image_splitting=False
        ),
        video_processor=SmolVLMVideoProcessor(
            size=edge, max_image_size=edge, video_sampling=sampling
        ),
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch) ** 2 // scale**2,
        chat_template=SMOLVLM_CHAT_TEMPLATE,
    )
    return _sharpen_and_save(
        model, processor, out, eos_id=ids["<end_of_utterance>"], pad_id=ids["<|im_end|>"]
    )


def build_vision_encoder_decoder(
    out_dir: str | Path,
    *,
    family: str = "vision-encoder-decoder",
    encoder: str = "clip",
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_dim: int = 32,
    vision_depth: int = 2,
    image_size: int = 32,
    num_frames: int = 4,
    seed: int = 0,
) -> Path:
    """Build a tiny VisionEncoderDecoder captioner: a vision encoder + GPT-2 with cross-attention.

    ``encoder`` is ``clip`` (per-frame CLIP ViT, an image processor), or ``videomae`` /
    ``timesformer`` (a clip of exactly ``num_frames`` frames, a video processor).
    """
    from transformers import (
        CLIPImageProcessor,
        GPT2Config,
        TimesformerConfig,
        TimesformerVideoProcessor,
        VideoMAEConfig,
        VideoMAEVideoProcessor,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
    )
    from transformers.models.clip import CLIPVisionConfig

    out = Path(out_dir)
    tokenizer = build_bpe_tokenizer(
        ("<|endoftext|>",), bos="<|endoftext|>", eos="<|endoftext|>", pad="<|endoftext|>"
    )
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    vision = dict(
        hidden_size=vision_dim,
        intermediate_size=vision_dim * 2,
        num_hidden_layers=vision_depth,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=16,
    )
    square = {"height": image_size, "width": image_size}
    if encoder == "clip":
        enc_config = CLIPVisionConfig(**vision)
        preprocessor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size=square)
    elif encoder == "videomae":
        enc_config = VideoMAEConfig(
            **vision, num_frames=num_frames, tubelet_size=2, use_mean_pooling=False
        )
        preprocessor = VideoMAEVideoProcessor(size={"shortest_edge": image_size}, crop_size=square)
    elif encoder == "timesformer":
        enc_config = TimesformerConfig(**vision, num_frames=num_frames)
        preprocessor = TimesformerVideoProcessor(
            size={"shortest_edge": image_size}, crop_size=square
        )
    else:
        raise ValueError(f"encoder must be clip, videomae or timesformer, got {encoder!r}")
    dec_config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden_size,
        n_layer=num_layers,
        n_head=max(2, hidden_size // 32),
        n_positions=256,
        bos_token_id=eos,
        eos_token_id=eos,
        pad_token_id=eos,
        tie_word_embeddings=False,
    )
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc_config, dec_config)
    config.decoder_start_token_id = eos
    config.pad_token_id = eos
    config.eos_token_id = eos
    config.tie_word_embeddings = False
    torch.manual_seed(seed)
    model = VisionEncoderDecoderModel(config=config).eval()
    # Random encoder states of similar videos look alike to random cross-attention; a
    # wider encoder->decoder projection sharpens it so greedy captions follow the pixels.
    with torch.no_grad():
        model.enc_to_dec_proj.weight.mul_(10.0)
        model.enc_to_dec_proj.bias.mul_(10.0)
        if encoder == "timesformer":
            # Init leaves the learned frame-position embeddings at zero, which would make
            # the tiny encoder blind to frame order; a trained one is not.
            model.encoder.embeddings.time_embeddings.normal_(std=0.1)
    tokenizer.save_pretrained(out)
    return _sharpen_and_save(model, preprocessor, out, eos_id=eos, pad_id=eos)


# BLIP-2 (OPT LM): no chat template; the processor puts the query-token placeholders
# before the BOS that the OPT tokenizer prepends.
BLIP2_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>", "<image>")


def build_blip2(
    out_dir: str | Path,
    *,
    family: str = "blip-2",
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_dim: int = 32,
    vision_depth: int = 2,
    qformer_dim: int = 32,
    num_query_tokens: int = 8,
    image_size: int = 32,
    seed: int = 0,
) -> Path:
    """Build a tiny BLIP-2 (ViT tower, Q-Former with ``num_query_tokens`` queries, OPT LM)."""
    from transformers import (
        Blip2Config,
        Blip2ForConditionalGeneration,
        Blip2Processor,
        BlipImageProcessor,
    )

    out = Path(out_dir)
    tokenizer = build_bpe_tokenizer(
        BLIP2_SPECIAL_TOKENS,
        bos="</s>",
        prepend_bos=True,  # OPT's tokenizer prepends </s>
        eos="</s>",
        pad="<pad>",
        # No named image_token: Blip2Processor registers "<image>" itself (and, in this
        # transformers, fails on a tokenizer that already names one).
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in BLIP2_SPECIAL_TOKENS}
    config = Blip2Config(
        vision_config=dict(
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            num_hidden_layers=vision_depth,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=16,
            initializer_range=0.02,  # the default (1e-10) leaves the tower blind to pixels
        ),
        qformer_config=dict(
            hidden_size=qformer_dim,
            intermediate_size=qformer_dim * 2,
            num_hidden_layers=2,
            num_attention_heads=2,
            encoder_hidden_size=vision_dim,
            cross_attention_frequency=1,
        ),
        text_config=dict(
            model_type="opt",
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
            ffn_dim=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=max(2, hidden_size // 32),
            max_position_embeddings=512,
            bos_token_id=ids["</s>"],
            eos_token_id=ids["</s>"],
            pad_token_id=ids["<pad>"],
            tie_word_embeddings=False,
        ),
        num_query_tokens=num_query_tokens,
        image_token_index=ids["<image>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        # Init leaves the learned queries at zero, so every query row of a frame would be
        # the same; a trained model's queries differ.
        model.query_tokens.normal_(std=1.0)
        # At init the queries drown out what they read from the image (frames differ by
        # ~1e-3 in the projected rows); a stronger cross-attention makes rows follow pixels.
        for layer in model.qformer.encoder.layer:
            layer.crossattention.attention.value.weight.mul_(10.0)
            layer.crossattention.output.dense.weight.mul_(10.0)
    processor = Blip2Processor(
        image_processor=BlipImageProcessor(size={"height": image_size, "width": image_size}),
        tokenizer=tokenizer,
        num_query_tokens=num_query_tokens,
    )
    return _sharpen_and_save(model, processor, out, eos_id=ids["</s>"], pad_id=ids["<pad>"])


# IDEFICS (open Flamingo; Llama LM): the processor writes "<s>", then per image
# "<fake_token_around_image><image><fake_token_around_image>" (consecutive images share the
# fake token between them); instruct checkpoints end user turns with <end_of_utterance>.
IDEFICS_SPECIAL_TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "<fake_token_around_image>",
    "<image>",
    "<end_of_utterance>",
)


def build_idefics(
    out_dir: str | Path,
    *,
    family: str = "idefics",
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_dim: int = 32,
    vision_depth: int = 2,
    num_latents: int = 4,
    image_size: int = 32,
    seed: int = 0,
) -> Path:
    """Build a tiny IDEFICS (CLIP-style tower, Perceiver resampler, gated cross-attention)."""
    from transformers import IdeficsConfig, IdeficsForVisionText2Text, IdeficsProcessor
    from transformers.models.idefics import IdeficsImageProcessor

    out = Path(out_dir)
    tokenizer = build_bpe_tokenizer(
        IDEFICS_SPECIAL_TOKENS, bos="<s>", eos="</s>", pad="<unk>", prepend_bos=False
    )
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in IDEFICS_SPECIAL_TOKENS}
    heads = max(2, hidden_size // 32)
    config = IdeficsConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        max_position_embeddings=512,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<unk>"],
        # Checkpoints learn the tanh gates of the cross-attention; init at zero would make
        # the LM ignore the images entirely.
        alpha_initializer="ones",
        cross_layer_interval=1,
        use_resampler=True,
        vision_config=dict(
            embed_dim=vision_dim,
            intermediate_size=vision_dim * 2,
            num_hidden_layers=vision_depth,
            num_attention_heads=2,
            image_size=image_size,
            patch_size=16,
        ),
        perceiver_config=dict(
            use_resampler=True,
            resampler_n_latents=num_latents,
            resampler_depth=1,
            resampler_n_heads=2,
            resampler_head_dim=16,
        ),
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = IdeficsForVisionText2Text(config).eval()
    with torch.no_grad():
        # At init the resampler's learned latents drown out what they read from the frame
        # (frames differ by ~1e-2); stronger values make the latents follow the pixels.
        for attention, _ in model.model.perceiver_resampler.blocks:
            attention.v_proj.weight.mul_(10.0)
            attention.output_proj.weight.mul_(10.0)
    processor = IdeficsProcessor(
        image_processor=IdeficsImageProcessor(image_size=image_size),
        tokenizer=tokenizer,
        image_size=image_size,
    )
    return _sharpen_and_save(model, processor, out, eos_id=ids["</s>"], pad_id=ids["<unk>"])


def build_qwen3_vl(
    out_dir: str | Path,
    *,
    family: str = "qwen3_vl",
    hidden_size: int = 64,
    num_layers: int = 2,
    vision_dim: int = 32,
    vision_depth: int = 2,
    seed: int = 0,
) -> Path:
    """Build a tiny Qwen3-VL: timestamped frame groups, and deepstack features from the first
    vision layers added after the first LM layers (one per layer, as many as both have)."""
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Qwen3VLProcessor,
        Qwen3VLVideoProcessor,
    )

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS}
    heads = max(2, hidden_size // 32)
    head_dim = hidden_size // heads
    half = head_dim // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]
    patch = 16
    config = Qwen3VLConfig(
        text_config=dict(
            **_tiny_text_config(tokenizer, hidden_size, num_layers),
            head_dim=head_dim,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 10000.0,
                "mrope_section": mrope,
                "mrope_interleaved": True,
            },
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            pad_token_id=ids["<|endoftext|>"],
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=vision_dim,
            intermediate_size=vision_dim * 2,
            num_heads=2,
            patch_size=patch,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=hidden_size,
            num_position_embeddings=64,  # an 8x8 learned grid, interpolated per frame size
            deepstack_visual_indexes=list(range(min(vision_depth, num_layers))),
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Qwen3VLForConditionalGeneration(config).eval()
    # Small pixel budgets keep the tiny model fast on CPU; real checkpoints ship their own.
    factor = patch * 2
    size = {"shortest_edge": factor * factor * 4, "longest_edge": factor * factor * 64}
    processor = Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=patch, merge_size=2, size=size),
        video_processor=Qwen3VLVideoProcessor(
            patch_size=patch, size=size, cap_pixels_per_frame=True
        ),
        tokenizer=tokenizer,
        chat_template=QWEN_CHAT_TEMPLATE,
    )
    return _sharpen_and_save(
        model, processor, out, eos_id=ids["<|im_end|>"], pad_id=ids["<|endoftext|>"]
    )


FAMILIES = {
    "qwen2_vl": build_qwen_vl,
    "qwen2_5_vl": build_qwen_vl,
    "llava_onevision": build_llava_onevision,
    "llava_next_video": build_llava_next_video,
    "smolvlm": build_smolvlm,
    "vision-encoder-decoder": build_vision_encoder_decoder,
    "blip-2": build_blip2,
    "idefics": build_idefics,
    "qwen3_vl": build_qwen3_vl,
}


def build_tiny_text_lm(
    out_dir: str | Path, *, hidden_size: int = 64, num_layers: int = 2, seed: int = 0
) -> Path:
    """A tiny text-only chat model (Qwen2 causal LM, ChatML template): a summary model."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    out = Path(out_dir)
    tokenizer = build_tokenizer()
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>")
    pad = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    tokenizer.eos_token, tokenizer.pad_token = "<|im_end|>", "<|endoftext|>"
    config = Qwen2Config(
        **_tiny_text_config(tokenizer, hidden_size, num_layers),
        bos_token_id=pad,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    return _sharpen_and_save(model, tokenizer, out, eos_id=eos, pad_id=pad)


def build_tiny_model(family: str, out_dir: str | Path, **sizes: int) -> Path:
    """Build the tiny model of ``family`` (a ``config.model_type``) into ``out_dir``."""
    if family not in FAMILIES:
        raise ValueError(f"no tiny builder for {family!r}; choose one of {sorted(FAMILIES)}")
    return FAMILIES[family](out_dir, family=family, **sizes)
