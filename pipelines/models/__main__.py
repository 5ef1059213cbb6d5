"""``python -m pipelines.models``: print the README's model-family table."""

from pipelines.models import families_markdown

print(families_markdown())
