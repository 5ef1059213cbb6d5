"""Registry of model families, keyed by ``config.model_type``.

Adding a family is adding one module in this package that defines a ``VideoLMFamily``
subclass decorated with ``@register``; modules are discovered on first lookup.
"""

from __future__ import annotations

import importlib
import pkgutil

from pipelines.models.base import VideoLMFamily

_REGISTRY: dict[str, type[VideoLMFamily]] = {}
_NOT_FAMILIES = {"base", "chat", "placeholder", "text_lm", "tiny"}


def register(cls: type[VideoLMFamily]) -> type[VideoLMFamily]:
    for model_type in cls.model_types:
        if model_type in _REGISTRY and _REGISTRY[model_type] is not cls:
            raise RuntimeError(f"model_type {model_type!r} registered twice")
        _REGISTRY[model_type] = cls
    return cls


def _discover() -> None:
    for mod in pkgutil.iter_modules(__path__):
        if mod.name not in _NOT_FAMILIES:
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
