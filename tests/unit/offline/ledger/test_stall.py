"""Which stage a stall names: the one holding input it does not finish, not one that is
merely starved or done (watchdog rules called directly, no Ray)."""

from __future__ import annotations

import time

import pytest

from pipelines.offline.ledger.stall import StallWatchdog

STAGES = ("decode", "encode", "generate")


@pytest.mark.parametrize(
    ("ago", "stuck"),
    [
        ({"decode": 30, "encode": 20}, "generate"),  # generate never finished a batch
        ({"decode": 1, "encode": 40, "generate": 39}, "encode"),  # generate only starved
        ({}, "decode"),  # nothing ever finished: the first stage
        ({"decode": 50, "encode": 45, "generate": 44}, "decode"),  # all caught up: decode
    ],
)
def test_the_stall_names_the_stage_that_holds_unfinished_input(ago, stuck):
    dog = StallWatchdog(15, None, STAGES)
    now = time.time()
    message = dog._describe({s: now - a for s, a in ago.items()})
    assert message.startswith(f"no progress for 15 s: stage {stuck!r}")


def test_model_stages_that_have_not_loaded_are_starting_not_stalled():
    dog = StallWatchdog(15, None, STAGES)
    assert dog._starting({"decode": 1.0})
    assert dog._starting({"decode": 1.0, "encode:ready": 1.0})
    assert not dog._starting({"decode": 1.0, "encode": 2.0, "generate:ready": 1.0})
