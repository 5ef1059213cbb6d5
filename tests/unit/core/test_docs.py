from __future__ import annotations

from pathlib import Path

from pipelines.core.errors import ErrorCode
from pipelines.core.output import schema_markdown

README = (Path(__file__).parents[3] / "README.md").read_text()


def test_readme_schema_table_matches_the_code():
    block = README.split("<!-- schema:begin")[1].split("-->", 1)[1].split("<!-- schema:end")[0]
    assert block.strip() == schema_markdown()


def test_readme_documents_every_error_code():
    missing = [c.value for c in ErrorCode if f"| `{c.value}` |" not in README]
    assert missing == []


def test_readme_videos_table_matches_the_code():
    from pipelines.offline.summaries import VIDEO_COLUMNS

    block = README.split("<!-- videos:begin")[1].split("-->", 1)[1].split("<!-- videos:end")[0]
    rows = [f"| `{n}` | `{t}` | {d} |" for n, t, d in VIDEO_COLUMNS]
    assert block.strip() == "\n".join(["| column | type | meaning |", "|---|---|---|", *rows])


def test_readme_transcripts_table_matches_the_code():
    from pipelines.offline.transcripts import TRANSCRIPT_COLUMNS

    block = README.split("<!-- transcripts:begin")[1].split("-->", 1)[1]
    block = block.split("<!-- transcripts:end")[0]
    rows = [f"| `{n}` | `{t}` | {d} |" for n, t, d in TRANSCRIPT_COLUMNS]
    assert block.strip() == "\n".join(["| column | type | meaning |", "|---|---|---|", *rows])
