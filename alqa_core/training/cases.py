"""Training cases: a preprocessed image, its (possibly partial) label and what is annotated.

A case annotates a set of organs (its source dataset's ``labels``). For the
other organs the label says nothing: a 0 there means "unknown", not
"background", so the loss must ignore them (partial labels). Optionally only
some voxels are annotated at all (``annotated_voxels``, for slice-level
annotation strategies); the rest give no gradient for any organ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable, canonical_organ_name


def _readonly(array: np.ndarray) -> np.ndarray:
    out = array.view()
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class TrainingCase:
    """One preprocessed case. ``image``: float32 (i, j, k) in [0, 1]; ``label``: uint8 organ-table values."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    annotated_organs: tuple[str, ...]
    annotated_voxels: np.ndarray | None = None

    def __post_init__(self):
        where = f"case {self.case_id}"
        image = np.asarray(self.image)
        label = np.asarray(self.label)
        if image.ndim != 3 or image.dtype != np.float32:
            raise AlqaInputError(where, f"image must be a float32 (i, j, k) array, got {image.dtype} {image.shape}")
        if label.shape != image.shape or label.dtype != np.uint8:
            raise AlqaInputError(where, f"label must be uint8 with the image's shape {image.shape}, got {label.dtype} {label.shape}")
        object.__setattr__(self, "image", _readonly(image))
        object.__setattr__(self, "label", _readonly(label))
        object.__setattr__(self, "annotated_organs", tuple(canonical_organ_name(o) for o in self.annotated_organs))
        if self.annotated_voxels is not None:
            mask = np.asarray(self.annotated_voxels)
            if mask.shape != image.shape or mask.dtype != np.bool_:
                raise AlqaInputError(where, f"annotated_voxels must be bool with the image's shape {image.shape}, got {mask.dtype} {mask.shape}")
            object.__setattr__(self, "annotated_voxels", _readonly(mask))

    def organ_weights(self, table: OrganTable) -> np.ndarray:
        """float32 (C,): 1 for organs this case annotates, 0 for the others (no gradient)."""
        unknown = [o for o in self.annotated_organs if o not in table.names]
        if unknown:
            raise AlqaInputError(f"case {self.case_id}", f"annotated organs {unknown} are not in the organ table {table.names}")
        return np.array([1.0 if name in self.annotated_organs else 0.0 for name in table.names], dtype=np.float32)

    def content_sha256(self) -> str:
        """Hash of what the case teaches: label content, annotated organs and annotated voxels."""
        h = hashlib.sha256()
        h.update(repr((self.label.shape, sorted(self.annotated_organs))).encode())
        h.update(np.ascontiguousarray(self.label).tobytes())
        if self.annotated_voxels is not None:
            h.update(np.packbits(self.annotated_voxels).tobytes())
        return h.hexdigest()


def one_hot_organs(label: np.ndarray, table: OrganTable) -> np.ndarray:
    """Multi-label targets: float32 (C, ...) with channel c = (label == table.values[c])."""
    values = np.asarray(table.values, dtype=label.dtype).reshape((-1,) + (1,) * label.ndim)
    return (label[None] == values).astype(np.float32)


__all__ = ["TrainingCase", "one_hot_organs"]
