"""The offline corpus job on Ray Data: the recipe (``job``), the one Ray Data adapter
(``ray_data``), the streaming input planner (``inputs``), work units, summaries, and the
run ledger (``ledger``)."""
