"""Keep one bad item from failing its whole batch, without hiding infrastructure faults."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from pipelines.errors import ErrorCode, StageError

T = TypeVar("T")
R = TypeVar("R")

# Out of memory and device faults belong to the worker, not to an item: re-raise them so
# Ray restarts the actor and retries, instead of writing every clip as an error.
FATAL = (torch.OutOfMemoryError, MemoryError, KeyboardInterrupt, SystemExit)


def _is_fatal(exc: BaseException) -> bool:
    return isinstance(exc, FATAL) or "CUDA" in str(exc)


def run_isolated(
    fn: Callable[[Sequence[T]], list[R | StageError]], items: Sequence[T], stage: str
) -> list[R | StageError]:
    """Run ``fn`` on the batch; if it raises a data error, rerun item by item.

    The retry finds which items the model rejects (odd shapes, values it cannot take) so
    that only those become ``model_error`` rows.
    """
    try:
        return fn(items)
    except (ValueError, RuntimeError, IndexError) as exc:
        if _is_fatal(exc):
            raise
        if len(items) == 1:
            return [StageError(ErrorCode.MODEL_ERROR, f"{type(exc).__name__}: {exc}", stage)]
    return [run_isolated(fn, [item], stage)[0] for item in items]
