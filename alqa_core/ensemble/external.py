"""External ensemble members: predictions the user drops in (TotalSegmentator, nnU-Net).

A member's file is either

- a 3D integer **label map** in the member's own numbering (TotalSegmentator
  ``total``, v1, AbdomenAtlas, or a dataset.json's labels): it becomes a
  one-hot soft prediction, 255 where the voxel carries the organ's mapped
  label and 0 elsewhere; or
- a 4D **probability map**, channels last as NIfTI stores them (``i, j, k, C``),
  float in [0, 1] or uint8 0..255, where channel ``v`` is the probability of
  the member's class value ``v`` (channel 0 is its background).

Either way the result has one channel per organ of the organ table, in table
order, so every member's soft prediction stacks with the others.

Coverage: a member may not predict some organs at all (its class map lacks
them, or a probability file has no channel for them). Those channels are 0,
and 0 would read as "confidently absent". So the result is an
:class:`ExternalPrediction`: the table-shaped :class:`SoftPrediction` plus
``covered_organs``, the organs the member actually predicts. Consumers
(attention, the ensemble mean, pseudo labels) must use only covered members
per organ; :meth:`ExternalPrediction.covered` gives the SoftPrediction
restricted to those channels for code that aligns members by organ name.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.io.nifti import integral_labels, read_nifti_array
from alqa_core.organs import ClassMap, OrganTable, remap_labels
from alqa_core.volume import GRID_TOLERANCE_MM, Grid, SoftPrediction, grid_mismatch_mm, quantize_probabilities

log = logging.getLogger(__name__)

#: Float probabilities may overshoot [0, 1] by this much (softmax/sigmoid rounding) before being rejected.
PROBABILITY_SLACK = 1e-5


@dataclass(frozen=True, eq=False)
class ExternalPrediction:
    """An external member's prediction on the organ table, plus which organs it covers.

    ``prediction`` has every organ of the table (uncovered ones all 0);
    ``covered_organs`` lists, in table order, the organs the member predicts.
    """

    prediction: SoftPrediction
    covered_organs: tuple[str, ...]
    source: str = ""

    def __post_init__(self):
        covered = tuple(self.covered_organs)
        unknown = [o for o in covered if o not in self.prediction.organs]
        if unknown:
            raise ValueError(f"covered organs {unknown} are not channels of the prediction {self.prediction.organs}")
        object.__setattr__(self, "covered_organs", tuple(o for o in self.prediction.organs if o in covered))

    @property
    def member(self) -> str:
        return self.prediction.member

    @property
    def coverage_mask(self) -> np.ndarray:
        """Bool per channel of ``prediction``: True where the member predicts that organ."""
        return np.array([o in self.covered_organs for o in self.prediction.organs], dtype=bool)

    @property
    def missing_organs(self) -> tuple[str, ...]:
        return tuple(o for o in self.prediction.organs if o not in self.covered_organs)

    def covered(self) -> SoftPrediction:
        """The SoftPrediction restricted to the covered channels (organ names say which)."""
        p = self.prediction
        return SoftPrediction(np.asarray(p.array)[self.coverage_mask], p.affine, self.covered_organs, p.member)


def _on_reference_grid(array: np.ndarray, affine: np.ndarray, reference: Grid, path) -> np.ndarray:
    """``array`` (spatial axes first) on ``reference``'s voxel order, or AlqaInputError "mis-registered".

    A file may store the same voxels in another axis order or direction (e.g.
    TotalSegmentator run on a dcm2niix NIfTI, LAS, vs our LPS DICOM grid).
    That is a lossless permutation/flip (nibabel orientations), not a
    resampling; after it, every voxel centre must lie within 1e-3 mm of the
    reference's.
    """
    spatial = array.shape[:3]
    transform = nib.orientations.ornt_transform(
        nib.orientations.io_orientation(affine), nib.orientations.io_orientation(reference.affine)
    )
    if not np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        array = nib.orientations.apply_orientation(array, transform)
        affine = affine @ nib.orientations.inv_ornt_aff(transform, spatial)
    grid = Grid(array.shape[:3], affine)
    if tuple(grid.shape) != tuple(reference.shape):
        raise AlqaInputError(path, f"mis-registered: shape {grid.shape} differs from the CT's {reference.shape}")
    off_mm = grid_mismatch_mm(grid, reference)
    if off_mm > GRID_TOLERANCE_MM:
        raise AlqaInputError(
            path, f"mis-registered: voxel centres are up to {off_mm:.4g} mm off the CT's grid (tolerance {GRID_TOLERANCE_MM} mm)"
        )
    return array


def _from_labels(labels: np.ndarray, class_map: ClassMap, table: OrganTable, path) -> tuple[np.ndarray, tuple[str, ...]]:
    remapped = remap_labels(integral_labels(labels, path), class_map, table).array
    out = np.zeros((len(table), *labels.shape[:3]), dtype=np.uint8)
    for c, value in enumerate(table.values):
        np.multiply(remapped == value, np.uint8(255), out=out[c], casting="unsafe")
    covered = tuple(n for n in table.names if n in class_map.source_to_organ.values())
    return out, covered


def _probability_channel(channel: np.ndarray, path, source_value: int) -> np.ndarray:
    if channel.dtype == np.uint8:
        return channel
    if not np.issubdtype(channel.dtype, np.floating):
        raise AlqaInputError(path, f"4D probability map must be float in [0, 1] or uint8 0..255, got {channel.dtype}")
    if not np.all(np.isfinite(channel)):
        raise AlqaInputError(path, f"probability channel {source_value} contains NaN or infinite values")
    lo, hi = float(channel.min()), float(channel.max())
    if lo < -PROBABILITY_SLACK or hi > 1.0 + PROBABILITY_SLACK:
        raise AlqaInputError(path, f"probability channel {source_value} lies in [{lo:.4g}, {hi:.4g}], not [0, 1]")
    return quantize_probabilities(channel)


def _from_probabilities(probs: np.ndarray, class_map: ClassMap, table: OrganTable, path) -> tuple[np.ndarray, tuple[str, ...]]:
    n_channels = probs.shape[3]
    out = np.zeros((len(table), *probs.shape[:3]), dtype=np.uint8)
    covered = []
    for source_value, organ in sorted(class_map.source_to_organ.items()):
        if organ not in table.names:
            continue
        if source_value >= n_channels:
            log.warning("%s: no channel %d for %s (file has %d channels); the member does not cover it",
                        path, source_value, organ, n_channels)
            continue
        c = table.channel_of(organ)
        # Two source values for one organ (rare: split classes) are merged by the voxel-wise maximum.
        np.maximum(out[c], _probability_channel(probs[..., source_value], path, source_value), out=out[c])
        covered.append(organ)
    return out, tuple(covered)


def external_soft_prediction(
    array: np.ndarray,
    affine: np.ndarray,
    class_map: ClassMap,
    table: OrganTable,
    reference: Grid,
    member: str,
    path: str | Path | None = None,
) -> ExternalPrediction:
    """An external member's label map or 4D probabilities -> table-shaped uint8 soft prediction.

    ``reference`` is the CT's original grid; the member's grid must match it
    within 1e-3 mm (else AlqaInputError "mis-registered: ..." naming ``path``).
    Float probabilities outside [0, 1] or NaN raise AlqaInputError. See the
    module docstring for coverage.
    """
    arr = np.asarray(array)
    if arr.ndim == 5 and arr.shape[3] == 1:  # NIfTI vector layout (i, j, k, 1, C)
        arr = arr[:, :, :, 0, :]
    if arr.ndim == 4 and arr.shape[3] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (3, 4):
        raise AlqaInputError(path, f"expected a 3D label map or 4D (i, j, k, C) probabilities, got shape {arr.shape}")
    arr = _on_reference_grid(arr, affine, reference, path)
    if arr.ndim == 3:
        one_hot, covered = _from_labels(arr, class_map, table, path)
    else:
        one_hot, covered = _from_probabilities(arr, class_map, table, path)
    if not covered:
        raise AlqaInputError(path, f"class map {class_map.name!r} covers none of the organs {table.names}")
    prediction = SoftPrediction(one_hot, reference.affine, table.names, member)
    return ExternalPrediction(prediction, covered, "" if path is None else str(path))


def read_external_prediction(
    path: str | Path, class_map: ClassMap, table: OrganTable, reference: Grid, member: str
) -> ExternalPrediction:
    """Read a member's ``<case>.nii.gz`` and convert it (see :func:`external_soft_prediction`)."""
    array, affine = read_nifti_array(path)
    return external_soft_prediction(array, affine, class_map, table, reference, member, path)


__all__ = ["PROBABILITY_SLACK", "ExternalPrediction", "external_soft_prediction", "read_external_prediction"]
