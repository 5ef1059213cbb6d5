"""Keep one bad item from failing its whole batch, without hiding bugs or infrastructure faults.

What family code may raise, and what becomes of it:

- ``ItemError``: raised only where the family knows the item's input is at fault (e.g. a
  processor refusing one clip's frames, see ``rejected_inputs``); it becomes that item's
  ``StageError``. A batch that raises one is rerun item by item to find which items.
- ``FATAL``: out of memory and accelerator faults belong to the worker, not to an item;
  re-raised so that Ray restarts the actor and retries, instead of writing every clip of
  the batch as an error. Decided by type, never by the message text.
- anything else is a bug (``TypeError``, ``AttributeError``, a ``ValueError`` outside the
  input checks, ...) and propagates unchanged: a bug must not pass as a data error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch

from pipelines.core.errors import StageError
from pipelines.models.base import ItemError

T = TypeVar("T")
R = TypeVar("R")

# torch.OutOfMemoryError is torch.cuda.OutOfMemoryError; AcceleratorError (CUDA/XPU/...
# runtime faults such as an illegal memory access) exists from torch 2.8.
FATAL: tuple[type[BaseException], ...] = (
    torch.OutOfMemoryError,
    MemoryError,
    *((torch.AcceleratorError,) if hasattr(torch, "AcceleratorError") else ()),
)


def run_isolated(
    fn: Callable[[Sequence[T]], list[R | StageError]], items: Sequence[T], stage: str
) -> list[R | StageError]:
    """Run ``fn`` on the batch; if an item's input is refused, rerun item by item."""
    try:
        return fn(items)
    except FATAL:
        raise
    except ItemError as exc:
        if len(items) == 1:
            return [StageError(exc.code, exc.message, stage)]
    return [run_isolated(fn, [item], stage)[0] for item in items]
