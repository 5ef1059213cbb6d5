"""Load one half of a split model: the other half's submodules never exist, so never load.

Each actor runs only its half (the vision side in "encode", the language model in
"generate"). Loading the whole model and dropping the rest would read and allocate the
other half's weights first: gigabytes for a 7B VLM, on every actor start. Instead a half
goes through the ordinary ``from_pretrained`` path on a subclass of the model class whose
``__init__`` removes the other half's submodules right after the parent built them. In
transformers 5 that build happens on the meta device, so removing costs nothing, and the
loader only materialises checkpoint tensors whose names are in the (smaller) model's state
dict: the removed half's tensors are reported as unexpected, never read (the safetensors
file is memory-mapped and only the kept tensors' pages are touched). One exception: a
bare parameter listed for removal (BLIP-2's learned queries, LLaVA's newline row) is loaded
and dropped afterwards, because the model's weight init, run on every load, reads it
without a None check; such tensors are tiny.

The subclass keeps the parent's name and module on purpose: transformers looks up its
checkpoint key conversions (e.g. Qwen2-VL's legacy ``visual.*``/``model.*`` layout) by
class name, and treats classes defined outside ``transformers.`` as custom code that gets
none. Only the removed prefixes are silenced in the load report; any other unexpected key
is still warned about, and a missing key (a weight of the half left at random init) is an
error.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import transformers

if TYPE_CHECKING:
    from transformers import PreTrainedModel

logger = logging.getLogger(__name__)

StandIn = Callable[[torch.nn.Module], torch.nn.Module]
"""Builds a weightless replacement for a removed submodule, from the (meta) original."""


class HalfLoadError(RuntimeError):
    """A half's own weights did not all come from the checkpoint."""


@dataclass(frozen=True)
class Split:
    """Which submodules (dotted paths from the loaded model) belong to which half.

    A path in neither tuple is shared: both halves load it. ``optional`` paths are ones some
    configs do not build (e.g. a resampler behind a config flag); they may be absent.
    """

    encoder: tuple[str, ...]
    lm: tuple[str, ...]
    optional: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if both := set(self.encoder) & set(self.lm):
            raise ValueError(f"{sorted(both)} cannot belong to both halves")


def under(name: str, prefixes: Collection[str]) -> bool:
    """Whether parameter/module ``name`` is one of ``prefixes`` or lies inside one."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def model_class(mapping: Mapping, config) -> type[PreTrainedModel]:
    """The class an auto class with this ``mapping`` (e.g. ``MODEL_FOR_..._MAPPING``) would
    instantiate for the checkpoint's ``config``: the half subclasses a concrete class."""
    found = mapping[type(config)]
    if isinstance(found, (list, tuple)):  # several heads share a config: the saved one wins
        by_name = {c.__name__: c for c in found}
        found = next((by_name[a] for a in config.architectures or () if a in by_name), found[0])
    return found


def _tensor_paths(model: PreTrainedModel, paths: Sequence[str]) -> list[str]:
    """The ``paths`` that name a parameter or buffer rather than a submodule."""
    found = []
    for path in paths:
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if isinstance(getattr(parent, leaf, None), torch.Tensor):
            found.append(path)
    return found


def _remove(
    model: PreTrainedModel,
    removed: Sequence[str],
    stand_ins: Mapping[str, StandIn],
    optional: Collection[str],
) -> None:
    for path in removed:
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        if not hasattr(parent, leaf):
            if path in optional:
                continue
            raise ValueError(f"{type(model).__name__} has no submodule {path!r} to remove")
        stand_in = stand_ins.get(path)
        # None (not delattr): the model's own code tests these attributes for None.
        setattr(parent, leaf, None if stand_in is None else stand_in(getattr(parent, leaf)))


def _drop_ties(model: PreTrainedModel, removed: Sequence[str]) -> None:
    """Forget weight ties that touch a removed submodule, in every nested pretrained model.

    ``post_init`` already expanded the ties (target -> source) while the whole model
    existed; tying into a removed module would fail, and its tensor is not loaded anyway.
    """
    for prefix, module in model.named_modules():
        if not isinstance(module, transformers.PreTrainedModel):
            continue
        gone = [
            p.removeprefix(prefix + ".") if prefix else p
            for p in removed
            if not prefix or p.startswith(prefix + ".")
        ]
        for attr in ("_tied_weights_keys", "all_tied_weights_keys"):
            ties = getattr(module, attr, None)
            if ties:
                kept = {t: s for t, s in ties.items() if not (under(t, gone) or under(s, gone))}
                setattr(module, attr, kept)


def _expect_absent(model: PreTrainedModel, removed: Sequence[str]) -> None:
    """Silence the load report for exactly the removed prefixes: those checkpoint keys are
    skipped on purpose; any other unexpected key is still reported."""
    patterns = {rf"^{re.escape(p)}(\.|$)" for p in removed}
    model._keys_to_ignore_on_load_unexpected = (
        set(model._keys_to_ignore_on_load_unexpected or ()) | patterns
    )


@functools.cache
def half_class(
    model_cls: type[PreTrainedModel],
    removed: tuple[str, ...],
    stand_ins: tuple[tuple[str, StandIn], ...] = (),
    optional: frozenset[str] = frozenset(),
) -> type[PreTrainedModel]:
    """``model_cls`` without the ``removed`` submodules (built, then removed, in ``__init__``)."""
    replacements = dict(stand_ins)
    if unknown := set(replacements) - set(removed):
        raise ValueError(f"stand-ins for paths that are not removed: {sorted(unknown)}")

    def __init__(self, *args, **kwargs) -> None:
        model_cls.__init__(self, *args, **kwargs)
        # Bare tensors stay until loaded (module doc).
        tensors = _tensor_paths(self, removed)
        if set(tensors) & set(replacements):
            raise ValueError(f"stand-ins replace submodules, not tensors: {tensors}")
        modules = [p for p in removed if p not in tensors]
        _remove(self, modules, replacements, optional)
        _drop_ties(self, removed)
        _expect_absent(self, modules)

    namespace = {
        "__init__": __init__,
        # Same identity as the parent for transformers' class-keyed lookups (module doc).
        "__module__": model_cls.__module__,
        "__qualname__": model_cls.__qualname__,
        "__doc__": f"{model_cls.__name__} without {', '.join(removed)}.",
        "removed_submodules": removed,
    }
    return type(model_cls.__name__, (model_cls,), namespace)


def _check_report(info: dict, name_or_path: str, cls_name: str) -> None:
    if missing := sorted(info["missing_keys"]):
        raise HalfLoadError(
            f"{cls_name} half from {name_or_path}: weights missing from the checkpoint "
            f"(they would be random): {missing}"
        )
    if unexpected := sorted(info["unexpected_keys"]):
        logger.warning(
            "%s half from %s: checkpoint keys outside both halves were not loaded: %s",
            cls_name,
            name_or_path,
            unexpected,
        )


def load_without(
    model_cls: type[PreTrainedModel],
    name_or_path: str,
    removed: Sequence[str],
    *,
    stand_ins: Mapping[str, StandIn] | None = None,
    optional: Collection[str] = (),
    **kwargs,
) -> PreTrainedModel:
    """``model_cls.from_pretrained(name_or_path, **kwargs)`` minus the ``removed`` submodules,
    whose checkpoint tensors are never read. ``stand_ins`` replace some removed submodules
    with weightless objects the model's code still needs (else they become None)."""
    cls = half_class(
        model_cls,
        tuple(removed),
        tuple(sorted((stand_ins or {}).items())),
        frozenset(optional),
    )
    model, info = cls.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    _check_report(info, name_or_path, model_cls.__name__)
    _remove(model, _tensor_paths(model, removed), {}, optional)
    return model.eval()


def load_encoder_half(
    model_cls: type[PreTrainedModel], name_or_path: str, split: Split, **kwargs
) -> PreTrainedModel:
    """The model without the LM half's submodules."""
    return load_without(model_cls, name_or_path, split.lm, optional=split.optional, **kwargs)


def load_lm_half(
    model_cls: type[PreTrainedModel], name_or_path: str, split: Split, **kwargs
) -> PreTrainedModel:
    """The model without the encoder half's submodules."""
    return load_without(model_cls, name_or_path, split.encoder, optional=split.optional, **kwargs)
