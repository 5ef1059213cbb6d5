"""The stage contract every adapter relies on: one result per item, and a codec per stage."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import pipelines.stages
from pipelines.core.errors import ErrorCode, StageError
from pipelines.core.stage import FanOutStage, MapStage, RowCodec
from pipelines.offline.ray_data import map_rows


class Dropping(MapStage[int, int]):
    """A broken stage: it loses the last item's result."""

    name = "dropping"
    codec = RowCodec(item=lambda r: int(r["n"]), update=lambda out: {"n": out})

    def process_batch(self, items, **options):
        return [i * 2 for i in items][:-1]


class Doubling(Dropping):
    name = "doubling"

    def process_batch(self, items, **options):
        factor = options.get("factor", 2)
        return [
            StageError(ErrorCode.MODEL_ERROR, "odd", self.name) if i == 3 else i * factor
            for i in items
        ]


def _rows(*ns):
    return [{"n": n, "error_code": "", "error_message": "", "error_stage": ""} for n in ns]


def test_a_result_short_of_the_items_is_refused_loudly():
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        Dropping()([1, 2])
    # The adapters call stages the same way: a lost result never shifts rows.
    with pytest.raises(RuntimeError, match="returned 2 results for 3 items"):
        map_rows(Dropping(), _rows(1, 2, 3))


def test_per_call_options_pass_through_the_checked_call():
    assert Doubling()([1, 2], factor=10) == [10, 20]


def test_the_adapter_applies_the_codec_and_passes_failed_rows_untouched():
    failed = {"n": 5, "error_code": "corrupt", "error_message": "bad", "error_stage": "decode"}
    out = map_rows(Doubling(), [*_rows(1, 3), failed])
    assert [r["n"] for r in out] == [2, 3, 5]
    assert [r["error_code"] for r in out] == ["", "model_error", "corrupt"]
    assert out[1]["error_stage"] == "doubling" and out[2]["error_stage"] == "decode"


def test_every_stage_declares_its_row_codec():
    stages = []
    for mod in pkgutil.iter_modules(pipelines.stages.__path__):
        module = importlib.import_module(f"pipelines.stages.{mod.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, MapStage | FanOutStage) and not inspect.isabstract(cls):
                stages.append(cls)
    names = {cls.name for cls in stages}
    assert {"decode", "encode", "generate", "summarize", "audio", "transcribe"} <= names
    assert [cls.name for cls in stages if not isinstance(cls.codec, RowCodec)] == []
