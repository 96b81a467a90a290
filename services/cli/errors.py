"""The CLI's one error type: a problem reported in one line, without a traceback."""

from __future__ import annotations


class CliError(Exception):
    """A problem to report in one line, without a traceback."""
