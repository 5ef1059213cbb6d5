"""Registry of model families, keyed by ``config.model_type``.

Adding a family is adding one module in this package that defines a ``VideoLMFamily``
subclass decorated with ``@register``: its adapter, its tiny builder and its README row.
Modules are discovered on first lookup, on the driver too (for a family's frame rules), so a
family module names transformers' model and processor classes through the module
(``transformers.X``) where it uses them: importing them at the top would load torchvision
and ``torch._dynamo`` (~2.5 s) into every job's driver. What is derived from the registry: the
``tiny-model`` choices, the parity and offline/online test cases, the README table.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from dataclasses import dataclass
from typing import Any

from pipelines.models.base import VideoLMFamily

_REGISTRY: dict[str, type[VideoLMFamily]] = {}
# Shared modules and models that are not video-LM families.
_NOT_FAMILIES = {"base", "chat", "hints", "placeholder", "text_lm", "tiny", "whisper"}
# Defined on the family's own class: a subclass of another family is another model, with
# its own README row. (``build_tiny`` may be inherited when class attributes steer it; a
# test builds every tiny model and checks that its config names that family.)
_OWN = ("model_type", "docs")


def register(cls: type[VideoLMFamily]) -> type[VideoLMFamily]:
    missing = [name for name in _OWN if name not in vars(cls)]
    if missing:
        raise TypeError(f"family {cls.__name__} must define {', '.join(missing)} on its own class")
    if inspect.isabstract(cls):
        raise TypeError(f"family {cls.__name__} leaves {sorted(cls.__abstractmethods__)} abstract")
    if _REGISTRY.get(cls.model_type, cls) is not cls:
        raise RuntimeError(f"model_type {cls.model_type!r} registered twice")
    _REGISTRY[cls.model_type] = cls
    return cls


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in _NOT_FAMILIES and not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")


def supported_model_types() -> list[str]:
    _discover()
    return sorted(_REGISTRY)


def family_for_model_type(model_type: str) -> type[VideoLMFamily]:
    _discover()
    try:
        return _REGISTRY[model_type]
    except KeyError:
        raise ValueError(
            f"model_type {model_type!r} is not supported; supported: "
            f"{', '.join(supported_model_types())}"
        ) from None


def resolve_family(model: str, revision: str | None = None) -> tuple[type[VideoLMFamily], str]:
    """Read the model's config (hub id or local folder) and return (family, model_type).

    Called on the driver before any actor starts, so an unsupported model fails at once.
    """
    from transformers import AutoConfig

    model_type = AutoConfig.from_pretrained(model, revision=revision).model_type
    return family_for_model_type(model_type), model_type


@dataclass(frozen=True)
class TinyCase:
    """One tiny model worth its own tests: a model_type and its builder's options."""

    model_type: str
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)

    @property
    def id(self) -> str:
        return "-".join([self.model_type, *(str(v) for _, v in self.options)])


def tiny_cases(*model_types: str) -> list[TinyCase]:
    """Every registered tiny variant (of ``model_types`` only, when given), in name order."""
    chosen = model_types or supported_model_types()
    return [
        TinyCase(t, tuple(sorted(variant.items())))
        for t in chosen
        for variant in family_for_model_type(t).tiny_variants
    ]


def families_markdown() -> str:
    """The README's family table (``python -m pipelines.models`` prints it)."""
    rows = [
        "| family | `model_type` | example hub ids | video route "
        "| what crosses encoder → LM (tiny model, per clip) |",
        "|---|---|---|---|---|",
    ]
    for model_type in supported_model_types():
        for doc in family_for_model_type(model_type).docs:
            kind = f"`{model_type}`" + (f" ({doc.model_type_note})" if doc.model_type_note else "")
            rows.append(
                f"| {doc.name} | {kind} | {doc.hub_ids} | {doc.video_route} | {doc.crosses} |"
            )
    return "\n".join(rows)
