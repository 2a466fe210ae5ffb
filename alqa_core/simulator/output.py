"""A simulator's output folder: claimed as its own, so a re-run may clear its working files and never a user's folder."""

from __future__ import annotations

import shutil
from pathlib import Path

from alqa_core.errors import AlqaInputError

#: marks a folder as a simulator's own, so a re-run may clear its working files
OWNER_MARKER = ".alqa-simulation"


def claim_output(out_dir: Path) -> None:
    """Make ``out_dir`` the simulator's own: create it, or clear a previous run's working files; never touch a user's folder."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / OWNER_MARKER).is_file():
        raise AlqaInputError(out_dir, "exists, is not empty and was not written by the simulator; choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / OWNER_MARKER).touch()
    shutil.rmtree(out_dir / "work", ignore_errors=True)
