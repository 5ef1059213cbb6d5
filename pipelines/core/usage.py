"""The one exception for "what you asked cannot work": the CLI prints it and exits 2.

It sits below the CLI so that the tools (submit, report, export) can raise it without importing
the CLI that calls them.
"""


class UsageError(Exception):
    """A mistake in the command or its inputs; reported without a traceback, exit 2."""
