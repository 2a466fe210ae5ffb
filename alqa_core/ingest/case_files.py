"""A dataset case's files loaded: its CT (NIfTI or DICOM) and its label in organ-table values on the CT's grid.

A label in another axis order of the same voxels (an axis flip or
permutation, as converters produce) is brought onto the image grid; anything
else is an :class:`AlqaInputError` naming both files.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Collection

import numpy as np
from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

from alqa_core.errors import AlqaInputError
from alqa_core.ingest.dataset import CaseLabel, CaseRecord
from alqa_core.io.dicom import read_dicom_grid, read_dicom_series
from alqa_core.io.nifti import read_ct, read_grid, read_label
from alqa_core.organs import DEFAULT_ORGAN_TABLE, ClassMap, OrganTable, remap_labels
from alqa_core.volume import CTVolume, Grid, LabelMap, grid_mismatch_mm

log = logging.getLogger(__name__)


def load_case_image(case: CaseRecord) -> CTVolume:
    """The case's CT in HU (NIfTI through nibabel, a DICOM folder through pydicom)."""
    if case.image_format == "dicom":
        return read_dicom_series(case.image_path)
    return read_ct(case.image_path)


def case_image_grid(case: CaseRecord) -> Grid:
    """The image grid from headers only (no voxel data read)."""
    if case.image_format == "dicom":
        return read_dicom_grid(case.image_path)
    return read_grid(case.image_path)


def _label_on_image_grid(
    array: np.ndarray, affine: np.ndarray, reference: Grid, path: Path, image_path: Path
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Bring a label onto ``reference`` if it holds the same voxels in another axis order.

    Same rule as ``alqa_core.ensemble.external`` applies to member predictions, but a
    label also needs the reoriented flag, the new affine, and an error naming
    both the label and the image file.
    """
    spatial = tuple(array.shape[:3])
    if Grid(spatial, affine).matches(reference):
        return array, affine, False
    transform = ornt_transform(io_orientation(affine), io_orientation(reference.affine))
    moved = apply_orientation(array, transform)
    moved_affine = affine @ inv_ornt_aff(transform, spatial)
    grid = Grid(moved.shape[:3], moved_affine)
    if grid.matches(reference):
        return np.ascontiguousarray(moved), moved_affine, True
    detail = (
        f"shape {spatial} vs {tuple(reference.shape)}"
        if grid.shape != reference.shape
        else f"voxel centres differ by up to {grid_mismatch_mm(grid, reference):.3f} mm"
    )
    raise AlqaInputError(path, f"not on the grid of image {image_path} ({detail}): mis-registered or from another scan")


def load_case_label_report(
    case: CaseRecord,
    class_map: ClassMap,
    table: OrganTable = DEFAULT_ORGAN_TABLE,
    reference: Grid | None = None,
    named_values: Collection[int] | None = None,
) -> CaseLabel | None:
    """The case's label in organ-table values on its image grid, or None for an unlabeled case.

    Only the case's annotated organs are kept: other values count as unmapped.
    ``reference`` defaults to the image grid read from the image header.
    ``named_values``: the values the dataset's ``labels`` name; a label voxel
    with any other value is refused (the file and the values are named), so a
    mislabelled file is not silently thinned out. None (a dataset that
    declares a class-map preset, such as TotalSegmentator's ~100 classes)
    drops the values the organ table lacks, with a warning.
    """
    if case.label_path is None:
        return None
    label = read_label(case.label_path, class_map.name)
    grid = reference if reference is not None else case_image_grid(case)
    array, affine, reoriented = _label_on_image_grid(label.array, label.affine, grid, case.label_path, case.image_path)
    annotated = ClassMap(
        class_map.name, {v: o for v, o in class_map.source_to_organ.items() if o in case.annotated_organs}
    )
    result = remap_labels(array, annotated, table)
    if named_values is not None:
        unnamed = sorted(int(v) for v in result.unmapped_values if int(v) not in set(named_values))
        if unnamed:
            raise AlqaInputError(case.label_path, f"label values {unnamed} are not named in dataset.json's labels {sorted(named_values)}")
    if result.unmapped_voxels:
        log.warning(
            "%s: %d labelled voxels with values %s map to no annotated organ (set to background)",
            case.label_path,
            result.unmapped_voxels,
            list(result.unmapped_values),
        )
    return CaseLabel(
        LabelMap(result.array, affine), case.annotated_organs, result.unmapped_voxels, result.unmapped_values, reoriented
    )


def load_case_label(
    case: CaseRecord,
    class_map: ClassMap,
    table: OrganTable = DEFAULT_ORGAN_TABLE,
    reference: Grid | None = None,
) -> LabelMap | None:
    """:func:`load_case_label_report` without the report (unmapped voxels are logged)."""
    report = load_case_label_report(case, class_map, table, reference)
    return None if report is None else report.label
