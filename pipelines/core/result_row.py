"""One output row from one clip's result, outside a run: what the online endpoint returns.

It has the ``clips/`` columns in order (``output.COLUMNS``), so an online row and an offline
row of the same clip compare equal field by field (``row_key`` aside: online rows are not
part of a run).
"""

from __future__ import annotations

from typing import Any

from pipelines.core.errors import StageError
from pipelines.core.output import COLUMNS
from pipelines.core.records import ROW_DEFAULTS, Caption, ClipRef, error_fields


def result_row(
    ref: ClipRef,
    result: Caption | StageError,
    *,
    model_id: str,
    model_revision: str = "",
    decode_s: float = 0.0,
    encode_s: float = 0.0,
) -> dict[str, Any]:
    """One output row (the Parquet columns, in order) for a clip's result; used online."""
    row: dict[str, Any] = {
        **ROW_DEFAULTS,
        **ref.to_row(),
        "model_id": model_id,
        "model_revision": model_revision,
        "decode_s": decode_s,
        "encode_s": encode_s,
    }
    row["frame_ts_s"] = list(ref.frame_ts_s)
    row.update(prompt=ref.ask.text, prompt_index=ref.ask.index, task=ref.ask.task)
    row["row_key"] = ""  # online rows are not part of a run
    if isinstance(result, StageError):
        row.update(error_fields(result))
    else:
        row.update(
            text=result.text,
            prompt_tokens=result.prompt_tokens,
            output_tokens=result.output_tokens,
            generate_s=result.generate_s,
            context=result.context,
            context_tokens=result.context_tokens,
            context_cut_tokens=result.context_cut_tokens,
        )
    return {name: row[name] for name, _, _ in COLUMNS}
