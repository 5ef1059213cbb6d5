"""Tools around a finished or running job: HTML report, export, cluster submission, demo."""
