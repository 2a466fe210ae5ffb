"""Partial (slice-level) annotation: training cases labelled on selected slices only.

A slice strategy asks annotators for some slices of a volume. The training
case then carries ``annotated_voxels`` = those slices; the masked loss
(:func:`alqa_core.training.masked_dice_bce_loss`, 004 Eq. 1) gives voxels
outside them weight w = 0, so whatever the label says there has no effect.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Mapping

import numpy as np

from alqa_core.strategies.selection import Selection
from alqa_core.training.cases import TrainingCase


def _slice_indices(n: int, slices: Iterable[int]) -> np.ndarray:
    idx = np.asarray(sorted(set(int(s) for s in slices)), dtype=np.int64)
    if idx.size and (idx[0] < 0 or idx[-1] >= n):
        raise ValueError(f"slice indices must be in [0, {n}), got {idx.tolist()}")
    return idx


def annotated_voxels_for_slices(shape: tuple[int, int, int], slices: Iterable[int], axis: int = -1) -> np.ndarray:
    """bool ``shape`` mask, True on the given slices along spatial ``axis`` (-1 = k, axial)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3:
        raise ValueError(f"shape must be (i, j, k), got {shape}")
    if axis not in (-3, -2, -1, 0, 1, 2):
        raise ValueError(f"axis must be a spatial axis of (i, j, k): one of -3..2, got {axis}")
    ax = axis % 3
    on = np.zeros(shape[ax], dtype=bool)
    on[_slice_indices(shape[ax], slices)] = True
    view = [1, 1, 1]
    view[ax] = shape[ax]
    return np.broadcast_to(on.reshape(view), shape).copy()


def partial_training_case(case: TrainingCase, slices: Iterable[int], axis: int = -1) -> TrainingCase:
    """``case`` restricted to ``slices``: ``annotated_voxels`` = those slices AND what was annotated before.

    The intersection (not the union) keeps the claim honest: a voxel counts as
    annotated only if it was and lies on a selected slice. To accumulate
    rounds, pass all slices selected so far. Image and label are shared, not copied.
    """
    mask = annotated_voxels_for_slices(case.image.shape, slices, axis)
    if case.annotated_voxels is not None:
        mask &= case.annotated_voxels
    return replace(case, annotated_voxels=mask)


def selection_training_cases(
    cases: Mapping[str, TrainingCase], selection: Selection, axis: int = -1
) -> tuple[TrainingCase, ...]:
    """The training cases a selection yields (simulation: fully labelled cases, restricted to the chosen slices).

    A whole-volume item (every slice along ``axis``) keeps its case as is.
    KeyError names a selected case missing from ``cases``.
    """
    out = []
    for item in selection.items:
        if item.case_id not in cases:
            raise KeyError(f"selected case {item.case_id!r} is not among the {len(cases)} training cases given")
        case = cases[item.case_id]
        n = case.image.shape[axis % 3]
        whole = len(item.slices) == n
        out.append(case if whole else partial_training_case(case, item.slices, axis))
    return tuple(out)


__all__ = ["annotated_voxels_for_slices", "partial_training_case", "selection_training_cases"]
