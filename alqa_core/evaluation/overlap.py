"""Dice of every organ of a label map at once, from one confusion count (numpy; no surface distances).

:func:`alqa_core.evaluation.segmentation.evaluate_case` computes Dice with
NSD and Hausdorff distances (MONAI, torch), which costs a surface-distance
pass per organ. Scoring a dataset of thousands of labels per round needs
Dice only: one ``bincount`` of ``truth * n + label`` pairs gives every
organ's intersection and both volumes. Dice follows the same conventions as
:func:`~alqa_core.evaluation.segmentation.mask_metrics` (both empty: 1; one
empty: 0).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from alqa_core.organs import OrganTable
from alqa_core.volume import LabelMap, require_same_grid


def organ_dice(label: LabelMap, truth: LabelMap, table: OrganTable, organs: Sequence[str] | None = None) -> dict[str, float]:
    """organ -> Dice of ``label`` against ``truth`` (organ-table values). ``organs`` default: present in either."""
    require_same_grid(truth.grid, label.grid, "label", "the ground truth")
    n = table.max_value + 1
    t = np.asarray(truth.array).astype(np.intp, copy=False).ravel()
    p = np.asarray(label.array).astype(np.intp, copy=False).ravel()
    if t.size and (t.max() >= n or p.max() >= n):
        raise ValueError(f"label values exceed the organ table's largest value {n - 1}")
    counts = np.bincount(t * n + p, minlength=n * n).reshape(n, n)
    inter, in_truth, in_label = np.diag(counts), counts.sum(axis=1), counts.sum(axis=0)
    if organs is None:
        organs = tuple(o.name for o in table.organs if in_truth[o.value] or in_label[o.value])
    out = {}
    for name in organs:
        v = table.value_of(name)
        total = int(in_truth[v] + in_label[v])
        out[name] = 1.0 if total == 0 else 2.0 * float(inter[v]) / float(total)
    return out


__all__ = ["organ_dice"]
