"""``python -m pipelines.cli``: what the cluster runs for a submitted job (see ``submit``)."""

import sys

from pipelines.cli import main

sys.exit(main())
