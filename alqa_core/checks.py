"""Data checks the platform runs after materializing (Dagster asset checks call these)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from alqa_core.io.nifti import read_grid, read_label
from alqa_core.organs import OrganTable


def grid_mismatches(pairs: Iterable[tuple[str, Path, Path]]) -> list[str]:
    """Cases whose volume is not on its raw scan's grid (headers only; cheap)."""
    return [case for case, volume, raw in pairs if not read_grid(volume).matches(read_grid(raw))]


def unknown_label_values(paths: Iterable[tuple[str, Path]], table: OrganTable) -> dict[str, list[int]]:
    """Cases whose label holds values outside the organ table."""
    out = {}
    for case, path in paths:
        values = np.unique(np.asarray(read_label(path).array))
        bad = [int(v) for v in values if v != 0 and int(v) not in table.values]
        if bad:
            out[case] = bad
    return out
