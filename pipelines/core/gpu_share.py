"""How model pools that leave ``num_gpus`` unset share the GPUs they can get (no Ray here).

Shared by the offline job (``pipelines.offline.placement``) and the endpoint
(``serve.config``): both have an encoder pool and an LM pool (and, offline, maybe a
speech-recognition pool) that each want a GPU per actor.

The rule, per pool left on "auto":

- no GPU in the cluster: 0;
- the GPUs left over by pools that set ``num_gpus`` hold every auto pool's minimum actors
  with a whole GPU each: 1 (no sharing, nothing to tune);
- else they share. One *group* is one actor of every auto pool; a group's fractions add up
  to one GPU, split by ``DEFAULT_GPU_WEIGHTS``; when there are more groups (the largest
  minimum pool size) than free GPUs, each fraction is divided so that
  ``ceil(groups / GPUs)`` groups fit on one GPU. Every actor of a pool asks the same
  fraction, so whatever order Ray places them in, they fit.

Why the LM gets the larger share: a fractional ``num_gpus`` is only Ray's scheduling
ledger (it caps neither memory nor compute; both actors see the whole device), so the
split decides what fits where when a pool grows past its minimum size. The LM actor holds
the larger part of the device: its weights (Qwen2-VL-2B: 1.5 B LM parameters against a
0.7 B vision tower) plus a KV cache that grows with batch size and new tokens, and its
autoregressive loop keeps the GPU busy for far longer per clip than the encoder's single
forward. A pool that sets ``num_gpus`` keeps it (per-pool override).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

# Relative GPU share per pool name when pools share; unknown names weigh 1.
DEFAULT_GPU_WEIGHTS: dict[str, float] = {"encoder": 1.0, "lm": 2.0, "asr": 1.0}

# Ray keeps fractional resources to 4 decimal places; fractions are rounded down to that
# grain so that a group never adds up to more than one GPU.
_GRAIN = 10_000


@dataclass(frozen=True)
class GpuAsk:
    """What one pool asks: its minimum actor count and ``num_gpus`` (None: decide for it)."""

    min_actors: int
    num_gpus: float | None


def _floor(x: float) -> float:
    return math.floor(x * _GRAIN + 1e-9) / _GRAIN


def share_gpus(
    asks: Mapping[str, GpuAsk],
    cluster_gpus: float,
    weights: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """``num_gpus`` per actor for every pool (the module docstring gives the rule)."""
    weights = DEFAULT_GPU_WEIGHTS if weights is None else weights
    out = {name: ask.num_gpus for name, ask in asks.items() if ask.num_gpus is not None}
    auto = {name: ask for name, ask in asks.items() if ask.num_gpus is None}
    if not auto:
        return out  # type: ignore[return-value]
    free = cluster_gpus - sum(asks[n].min_actors * g for n, g in out.items())
    if free <= 0:
        # Nothing left to share: the fail-fast check names the GPU shortfall, if any.
        return {**out, **dict.fromkeys(auto, 0.0 if cluster_gpus <= 0 else 1.0)}
    if sum(a.min_actors for a in auto.values()) <= math.floor(free + 1e-9):
        return {**out, **dict.fromkeys(auto, 1.0)}
    total = sum(weights.get(n, 1.0) for n in auto)
    groups = max(a.min_actors for a in auto.values())
    whole = math.floor(free + 1e-9)
    # Free GPUs of their own hold ceil(groups / GPUs) groups each; a leftover fraction of
    # one GPU (another pool set a fractional num_gpus) holds them all.
    per_gpu = math.ceil(groups / whole) if whole else groups
    room = 1.0 if whole else free
    for name in auto:
        out[name] = _floor(room * weights.get(name, 1.0) / total / per_gpu)
    return out  # type: ignore[return-value]
