"""The one error type for bad input.

Every problem with something a user gave (a scan, a label, a dataset folder,
a submission, a config) is raised as :class:`AlqaInputError`. Its message
always names the offending file and the reason, so a radiologist or an ML
engineer reading a Dagster log knows what to fix without a traceback.
"""

from __future__ import annotations

from pathlib import Path


class AlqaInputError(ValueError):
    """Bad input: ``str(err)`` is ``"<path>: <reason>"``."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{self.path or '<input>'}: {reason}")
