"""Training items on the preprocessed grid: a case's image, its label brought onto that grid, the annotated voxels.

:func:`lazy_training_cases` gives on-demand handles (what a round trains on:
memory then holds only the cases the sampler's pool and validation need);
:func:`load_training_cases` loads every item at once (small sets, tests).
"""

from __future__ import annotations

import json
from functools import partial
from typing import Sequence

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.ingest.preprocess import GridRecord, preprocess_label
from alqa_core.io.nifti import read_label, read_nifti_array
from alqa_core.training.cases import LazyCase, TrainingCase
from alqa_core.training.training_set import TrainingSource
from alqa_core.volume import LabelMap
from alqa_core.workspace import WorkspaceLayout


def annotated_voxels_of(slices: Sequence[int], record: GridRecord) -> np.ndarray:
    """The revised slices (third voxel axis of the original scan) as a mask on the preprocessed grid (nearest)."""
    original = record.original
    k = np.asarray(slices, dtype=int)
    if k.size == 0 or k.min() < 0 or k.max() >= original.shape[2]:
        raise AlqaInputError(None, f"revised slices {list(slices)} outside the scan's 0..{original.shape[2] - 1}")
    mask = np.zeros(original.shape, dtype=np.uint8)
    mask[:, :, k] = 1
    return preprocess_label(LabelMap(mask, original.affine), record) > 0


def load_training_case(source: TrainingSource, layout: WorkspaceLayout) -> TrainingCase:
    """The preprocessed image and the label brought onto its grid (with the revised slices' mask, for a slice-level revision)."""
    image, _ = read_nifti_array(layout.preprocessed(source.case_id))
    record = GridRecord.from_dict(json.loads(layout.grid_record(source.case_id).read_text()))
    label = preprocess_label(read_label(source.label_path), record)
    voxels = annotated_voxels_of(source.annotated_slices, record) if source.annotated_slices else None
    return TrainingCase(source.item_id, np.asarray(image, dtype=np.float32), label, source.annotated_organs, voxels)


def load_training_cases(sources: Sequence[TrainingSource], layout: WorkspaceLayout) -> list[TrainingCase]:
    """Every item loaded now (memory grows with the set: prefer :func:`lazy_training_cases` for a campaign)."""
    return [load_training_case(s, layout) for s in sources]


def lazy_training_cases(sources: Sequence[TrainingSource], layout: WorkspaceLayout) -> list[LazyCase]:
    """One :class:`LazyCase` per source, loading it (:func:`load_training_case`) only when asked.

    Reads nothing but checks that every file the items will need exists, so
    a missing one stops the round before training starts, named.
    """
    for s in sources:
        for path, what in (
            (layout.preprocessed(s.case_id), "preprocessed volume"),
            (layout.grid_record(s.case_id), "grid record"),
            (s.label_path, f"{s.origin} label"),
        ):
            if not path.exists():
                raise AlqaInputError(path, f"training item {s.item_id}: its {what} is missing")
    return [LazyCase(s.item_id, s.annotated_organs, partial(load_training_case, s, layout)) for s in sources]
