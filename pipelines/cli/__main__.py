"""``python -m pipelines.cli``: what the cluster runs for a submitted job (see ``submit``)."""

from pipelines.cli import run

run()
