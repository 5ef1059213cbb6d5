"""Each half is loaded without the other's submodules: same weights, nothing else, and a
checkpoint that does not fit the half is still reported."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import (
    AutoConfig,
    Blip2ForConditionalGeneration,
    Qwen2VLForConditionalGeneration,
)

from pipelines.core.config import ModelConfig
from pipelines.models.blip2 import Blip2
from pipelines.models.halves import (
    HalfLoadError,
    Split,
    load_encoder_half,
    load_lm_half,
    load_without,
    under,
)
from pipelines.models.qwen2_vl import QwenVL

# (model_type, transformers class, family): families whose halves are compared to the whole.
FAMILIES = {
    "qwen2_vl": (Qwen2VLForConditionalGeneration, QwenVL),
    "blip-2": (Blip2ForConditionalGeneration, Blip2),
}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family(request, tiny_model_dir):
    model_cls, fam = FAMILIES[request.param]
    path = tiny_model_dir(request.param)
    whole = model_cls.from_pretrained(path).eval()
    return path, model_cls, fam, whole


def _names(model: torch.nn.Module) -> set[str]:
    return {n for n, _ in model.named_parameters()} | {n for n, _ in model.named_buffers()}


def _check_half(half, whole, removed: tuple[str, ...]) -> None:
    """``half`` holds exactly the whole model's tensors outside ``removed``, equal to them."""
    whole_tensors = dict(whole.state_dict())
    kept = {n for n in whole_tensors if not under(n, removed)}
    held = set(half.state_dict())
    assert not {n for n in held if under(n, removed)}
    assert held == kept
    for name, tensor in half.state_dict().items():
        assert torch.equal(tensor, whole_tensors[name]), name


def test_encoder_half_holds_only_its_own_weights(family):
    path, model_cls, fam, whole = family
    split = fam.split()
    _check_half(load_encoder_half(model_cls, path, split), whole, split.lm)


def test_lm_half_holds_only_its_own_weights(family):
    path, model_cls, fam, whole = family
    split = fam.split()
    _check_half(load_lm_half(model_cls, path, split), whole, split.encoder)


def test_family_actors_hold_no_other_half_parameters(family):
    path, _, fam, whole = family
    enc, lm = fam(ModelConfig(model=path)), fam(ModelConfig(model=path))
    enc.load_encoder()
    lm.load_lm()
    # Where each actor's module sits in the whole model: Qwen's encoder keeps ``model``, the
    # BLIP-2 LM keeps ``language_model``.
    enc_prefix = "model." if fam is QwenVL else ""
    lm_prefix = "language_model." if fam is Blip2 else ""
    split = fam.split()
    whole_params = dict(whole.named_parameters())
    for module, prefix, foreign in (
        (enc.visual_model, enc_prefix, split.lm),
        (lm.lm, lm_prefix, split.encoder),
    ):
        names = [prefix + n for n, _ in module.named_parameters()]
        assert names and not [n for n in names if under(n, foreign)]
        for name, param in module.named_parameters():
            assert torch.equal(param.cpu(), whole_params[prefix + name]), name


def _rewritten(src: str, dst: Path, edit) -> str:
    """A copy of the model folder ``src`` whose weights went through ``edit(dict) -> dict``."""
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    save_file(edit(load_file(weights)), weights, metadata={"format": "pt"})
    return str(dst)


def _with(key: str, like: str):
    return lambda sd: {**sd, key: torch.zeros_like(sd[like])}


def _without(key: str):
    return lambda sd: {k: v for k, v in sd.items() if k != key}


def test_a_key_outside_both_halves_is_still_reported(tiny_model_dir, tmp_path, caplog):
    path = _rewritten(
        tiny_model_dir("qwen2_vl"),
        tmp_path / "extra",
        _with("model.language_model.layers.0.stray.weight", "lm_head.weight"),
    )
    split = QwenVL.split()
    with caplog.at_level(logging.WARNING, logger="pipelines.models.halves"):
        load_lm_half(Qwen2VLForConditionalGeneration, path, split)
    assert "model.language_model.layers.0.stray.weight" in caplog.text
    caplog.clear()
    # The same stray key lies inside the encoder half's removed LM: silently skipped there.
    with caplog.at_level(logging.WARNING, logger="pipelines.models.halves"):
        load_encoder_half(Qwen2VLForConditionalGeneration, path, split)
    assert "stray" not in caplog.text


def test_a_missing_weight_of_the_half_is_an_error(tiny_model_dir, tmp_path):
    path = _rewritten(tiny_model_dir("qwen2_vl"), tmp_path / "missing", _without("lm_head.weight"))
    split = QwenVL.split()
    with pytest.raises(HalfLoadError, match="lm_head.weight"):
        load_lm_half(Qwen2VLForConditionalGeneration, path, split)
    # The encoder half never wanted it.
    load_encoder_half(Qwen2VLForConditionalGeneration, path, split)


@pytest.mark.parametrize("layout", ["legacy", "current"])
def test_both_key_layouts_load(tiny_model_dir, tmp_path, layout):
    """``save_pretrained`` writes Qwen2-VL's legacy layout (``visual.*``, LM under
    ``model.*``), which transformers renames on load by a mapping looked up by class name;
    checkpoints in the current layout (``model.visual.*``, ``model.language_model.*``) load
    without renaming. Both must give each half the same weights."""

    def current(sd):
        out = {}
        for key, value in sd.items():
            if key.startswith("visual."):
                key = "model." + key
            elif key.startswith("model."):
                key = "model.language_model." + key.removeprefix("model.")
            out[key] = value
        return out

    src = tiny_model_dir("qwen2_vl")
    keys = set(load_file(Path(src) / "model.safetensors"))
    assert any(k.startswith("visual.") for k in keys)  # the legacy layout, as saved
    path = src if layout == "legacy" else _rewritten(src, tmp_path / layout, current)
    whole = Qwen2VLForConditionalGeneration.from_pretrained(src).eval()
    split = QwenVL.split()
    _check_half(load_encoder_half(Qwen2VLForConditionalGeneration, path, split), whole, split.lm)
    _check_half(load_lm_half(Qwen2VLForConditionalGeneration, path, split), whole, split.encoder)


def test_tied_embeddings_survive_the_split(tiny_model_dir, tmp_path):
    """With tied embeddings the checkpoint has no ``lm_head``: the LM half ties it, the
    encoder half (no LM at all) must not try to."""
    config = AutoConfig.from_pretrained(tiny_model_dir("qwen2_vl"))
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    Qwen2VLForConditionalGeneration(config).save_pretrained(tmp_path / "tied")
    path = str(tmp_path / "tied")
    assert "lm_head.weight" not in load_file(tmp_path / "tied" / "model.safetensors")
    split = QwenVL.split()
    lm = load_lm_half(Qwen2VLForConditionalGeneration, path, split)
    assert lm.lm_head.weight is lm.model.language_model.embed_tokens.weight
    enc = load_encoder_half(Qwen2VLForConditionalGeneration, path, split)
    assert enc.lm_head is None and enc.model.language_model is None
    assert not enc.all_tied_weights_keys


def test_bare_parameters_are_removed_after_loading(tiny_model_dir):
    """BLIP-2's learned queries are a parameter its weight init needs during the load."""
    lm = load_lm_half(Blip2ForConditionalGeneration, tiny_model_dir("blip-2"), Blip2.split())
    assert lm.query_tokens is None and lm.qformer is None


def test_unknown_paths_and_overlapping_halves_are_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="model.nope"):
        load_without(Qwen2VLForConditionalGeneration, tiny_model_dir("qwen2_vl"), ("model.nope",))
    with pytest.raises(ValueError, match="both halves"):
        Split(encoder=("a",), lm=("a", "b"))
