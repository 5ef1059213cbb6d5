"""What makes a run exact and safe: ``run.json`` and the journal (``resume``), the lease
on the output folder (``lease``), unit attempts (``attempts``) and the run monitor with
its stall watchdog (``stall``). Committed shards, the ledger of finished videos, are
written by ``pipelines.core.output``."""
