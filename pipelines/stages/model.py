"""``ModelStage``: a map stage that runs one half of a model family on a pool of actors.

It lives with the stages, not in the core contract (``pipelines.core.stage``), because it
reaches into the model registry: the core knows nothing of models.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

from pipelines.core.stage import In, MapStage, Out, Resources

if TYPE_CHECKING:
    from pipelines.core.config import ModelConfig, PoolConfig
    from pipelines.models.base import VideoLMFamily


class ModelStage(MapStage[In, Out]):
    """A map stage that runs one half of a model family on a pool of actors.

    Construction is cheap and loads nothing (the driver builds stages to hand them to
    Ray); ``setup()`` loads the model in the actor or replica. Both adapters call it
    before the first batch, and so must any direct user (tests, benchmarks).
    """

    def __init__(self, model: ModelConfig, pool: PoolConfig) -> None:
        self.model_config = model
        self.pool = pool
        self.batch_size = pool.batch_size
        self._family: VideoLMFamily | None = None

    @property
    def family(self) -> VideoLMFamily:
        """The loaded model, once ``setup()`` has run."""
        if self._family is None:
            raise RuntimeError(
                f"stage {self.name!r} has no model loaded: call setup() first (the Ray Data "
                "and Serve adapters do)"
            )
        return self._family

    @family.setter
    def family(self, family: VideoLMFamily) -> None:
        self._family = family

    @abc.abstractmethod
    def setup(self) -> None:
        """Load this stage's half of the model into ``family``."""

    @property
    def resources(self) -> Resources:
        return Resources(num_cpus=self.pool.num_cpus, num_gpus=self.pool.num_gpus or 0.0)

    @property
    def stateful(self) -> bool:
        return True

    def new_family(self) -> VideoLMFamily:
        """This model's family object, nothing loaded yet (``setup`` loads its half)."""
        import torch

        from pipelines.models import resolve_family

        family_cls, _ = resolve_family(self.model_config.model, self.model_config.revision)
        torch.set_grad_enabled(False)
        return family_cls(self.model_config)
