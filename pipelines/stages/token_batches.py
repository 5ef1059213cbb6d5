"""LM batches cut by prompt length under a token budget, instead of fixed slices.

A batched ``generate`` left-pads every prompt to the batch's longest: prompts of 300 and
40 tokens in one batch cost 260 pad tokens of attention and KV cache for nothing. Sorting
the requests by prompt length first puts similar lengths together; the budget then bounds
what one call holds (``rows x (longest prompt + max_new_tokens)``, the KV cache's shape),
so a batch of short prompts can hold more rows than one of long prompts.

Finished rows are not replaced mid-call: transformers' ``generate`` runs a batch until its
longest row ends, and its continuous-batching path does not take precomputed visual
embeddings. Grouping by prompt length is what can be done around it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class PadCount:
    """Prompt tokens sent to ``generate``, and how many of them were padding."""

    padded: int = 0
    pad: int = 0

    def add(self, lengths: Sequence[int]) -> None:
        longest = max(lengths, default=0)
        self.padded += longest * len(lengths)
        self.pad += sum(longest - n for n in lengths)

    @property
    def fraction(self) -> float:
        return self.pad / self.padded if self.padded else 0.0


def token_batches(
    lengths: Sequence[int],
    max_rows: int,
    budget: int | None = None,
    new_tokens: int = 0,
    by_length: bool = True,
) -> list[list[int]]:
    """Indices of ``lengths`` cut into batches of at most ``max_rows`` whose padded size
    ``rows x (longest + new_tokens)`` stays within ``budget`` (None: rows alone bound it).

    With ``by_length`` the indices are taken shortest prompt first (ties in input order),
    so each batch holds similar lengths; else in input order. A request over the budget by
    itself still gets a batch of its own: the budget shapes batches, it refuses nothing.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i]) if by_length else None
    order = order if order is not None else list(range(len(lengths)))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        wider = max(longest, lengths[i])
        fits = len(current) < max_rows and (
            budget is None or (len(current) + 1) * (wider + new_tokens) <= budget
        )
        if current and not fits:
            batches.append(current)
            current, wider = [], lengths[i]
        current.append(i)
        longest = wider
    if current:
        batches.append(current)
    return batches
