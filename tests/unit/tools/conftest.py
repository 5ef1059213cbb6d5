"""The ``make_run`` fixture: a run output folder from hand-made rows (see report_rows)."""

from __future__ import annotations

import pytest
from report_rows import write_run


@pytest.fixture
def make_run(tmp_path):
    def make(rows: list[dict], name: str = "out", **kw) -> str:
        return write_run(tmp_path / name, rows, **kw)

    return make
