"""The one stage contract, shared by the Ray Data adapter and the Ray Serve adapter.

A stage knows nothing about Ray. It declares what it needs (``resources``,
``batch_size``), loads its model once in ``setup()``, and maps items to results:

- ``MapStage.process_batch(items)`` returns one result per item, same length and order;
- ``FanOutStage.iter_outputs(item)`` streams many results for one item (video -> clips),
  so that a long video never has all its clips in memory at once.

A result is either the stage's output record or a ``StageError`` for that item.

A stage also declares its ``codec``: how the adapters' flat rows become its items and its
results become row updates, which column it consumes, and whether rows fan out before it
(the LM stage answers each ask of a clip: one row per ask). The Ray Data adapter has no
per-stage code: it applies the codec.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, TypeVar

from pipelines.core.errors import StageError

In = TypeVar("In")
Out = TypeVar("Out")


@dataclass(frozen=True)
class Resources:
    """What one worker of a stage asks the scheduler for."""

    num_cpus: float = 1.0
    num_gpus: float = 0.0
    memory_gb: float | None = None

    def ray_args(self) -> dict[str, float]:
        args: dict[str, float] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            args["num_gpus"] = self.num_gpus
        if self.memory_gb:
            args["memory"] = self.memory_gb * 1024**3
        return args


@dataclass(frozen=True)
class RowCodec:
    """How a stage's items and results travel as flat rows (Ray Data blocks, Parquet).

    - ``item``: a row -> the stage's input item.
    - ``update``: a result -> the columns it sets on its row (a fan-out stage: the whole row).
    - ``consumed``: a column the stage uses up (frames, embeddings), dropped after it.
    - ``defaults``: the columns the stage adds, for rows that skip it (errors).
    - ``takes``: which error-free rows the stage works on (None: all of them).
    - ``expand``: rows -> rows before the stage (None: one row stays one row).
    """

    item: Callable[[Mapping[str, Any]], Any]
    update: Callable[[Any], dict[str, Any]]
    consumed: str | None = None
    defaults: Mapping[str, Any] = field(default_factory=dict)
    takes: Callable[[Mapping[str, Any]], bool] | None = None
    expand: Callable[[list[dict[str, Any]]], list[dict[str, Any]]] | None = None


class Stage(abc.ABC, Generic[In, Out]):
    name: ClassVar[str]
    codec: ClassVar[RowCodec | None] = None
    """How the adapters turn rows into this stage's items and results back (see RowCodec)."""
    batch_size: int = 1
    """Preferred number of items per ``process_batch`` call."""

    @property
    def resources(self) -> Resources:
        return Resources()

    @property
    def stateful(self) -> bool:
        """True when ``setup`` loads something worth keeping: run as actors, not tasks."""
        return False

    def setup(self) -> None:
        """Load models or other per-worker state; called once per actor or replica."""


class MapStage(Stage[In, Out]):
    @abc.abstractmethod
    def process_batch(self, items: Sequence[In], **options: Any) -> list[Out | StageError]:
        """Return exactly one result per item, in the same order. ``options`` are per-call
        settings a stage may take (an online request's decoding settings)."""

    def __call__(self, items: Sequence[In], **options: Any) -> list[Out | StageError]:
        """What every adapter calls: ``process_batch`` held to the same-length rule."""
        results = self.process_batch(items, **options)
        # Results are matched back to their input rows by position, so a length mismatch
        # would silently attach captions to the wrong clip: refuse it loudly.
        if len(results) != len(items):
            raise RuntimeError(
                f"stage {self.name!r} returned {len(results)} results for {len(items)} items"
            )
        return results


class FanOutStage(Stage[In, Out]):
    @abc.abstractmethod
    def iter_outputs(self, item: In) -> Iterator[Out | StageError]:
        """Yield every result for one item; at least one (an error counts)."""

    def begin_unit(self, items: Sequence[In]) -> None:
        """Called by the offline adapter before the items of one work unit (one task)."""

    def end_unit(self) -> None:
        """Called after every output of the unit was taken."""
