"""Training cases: a preprocessed image, its (possibly partial) label and what is annotated.

A case annotates a set of organs (its source dataset's ``labels``). For the
other organs the label says nothing: a 0 there means "unknown", not
"background", so the loss must ignore them (partial labels). Optionally only
some voxels are annotated at all (``annotated_voxels``, for slice-level
annotation strategies); the rest give no gradient for any organ.

Training takes :class:`TrainingItem` s: a :class:`TrainingCase` already in
memory, or a :class:`LazyCase` that knows its id and annotated organs (all
the split, the organ check and the run's records need) and loads its arrays
only when :meth:`LazyCase.load` is called, so a campaign's cases need not all
be in memory at once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

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
        return _organ_weights(self.case_id, self.annotated_organs, table)

    def load(self) -> TrainingCase:
        """The case itself (it is in memory already): a :class:`TrainingItem` like :class:`LazyCase`."""
        return self

    def content_sha256(self) -> str:
        """Hash of what the case teaches: label content, annotated organs and annotated voxels."""
        h = hashlib.sha256()
        h.update(repr((self.label.shape, sorted(self.annotated_organs))).encode())
        h.update(np.ascontiguousarray(self.label).tobytes())
        if self.annotated_voxels is not None:
            h.update(np.packbits(self.annotated_voxels).tobytes())
        return h.hexdigest()


def _organ_weights(case_id: str, annotated_organs: Sequence[str], table: OrganTable) -> np.ndarray:
    unknown = [o for o in annotated_organs if o not in table.names]
    if unknown:
        raise AlqaInputError(f"case {case_id}", f"annotated organs {unknown} are not in the organ table {table.names}")
    return np.array([1.0 if name in annotated_organs else 0.0 for name in table.names], dtype=np.float32)


class TrainingItem(Protocol):
    """What training takes: an id and annotated organs known up front, the arrays on :meth:`load`."""

    case_id: str
    annotated_organs: tuple[str, ...]

    def organ_weights(self, table: OrganTable) -> np.ndarray: ...

    def content_sha256(self) -> str: ...

    def load(self) -> TrainingCase: ...


@dataclass(frozen=True, eq=False)
class LazyCase:
    """A training case that loads on demand: ``loader()`` returns its :class:`TrainingCase`, afresh at every call.

    Nothing is cached here: whoever calls :meth:`load` holds the arrays as
    long as it needs them (the patch sampler's bounded pool, validation one
    case at a time). The loaded case must carry the same id and annotated
    organs as the handle (the split and organ weights were decided from them).
    """

    case_id: str
    annotated_organs: tuple[str, ...]
    loader: Callable[[], TrainingCase]

    def __post_init__(self):
        object.__setattr__(self, "annotated_organs", tuple(canonical_organ_name(o) for o in self.annotated_organs))

    def organ_weights(self, table: OrganTable) -> np.ndarray:
        return _organ_weights(self.case_id, self.annotated_organs, table)

    def load(self) -> TrainingCase:
        case = self.loader()
        if not isinstance(case, TrainingCase):
            raise TypeError(f"case {self.case_id}: the loader returned {type(case).__name__}, not a TrainingCase")
        if case.case_id != self.case_id or set(case.annotated_organs) != set(self.annotated_organs):
            raise AlqaInputError(
                f"case {self.case_id}",
                f"loaded as case {case.case_id} annotating {sorted(case.annotated_organs)}, expected {sorted(self.annotated_organs)}",
            )
        return case

    def content_sha256(self) -> str:
        """:meth:`TrainingCase.content_sha256` of the loaded case (loads it, keeps nothing)."""
        return self.load().content_sha256()


def one_hot_organs(label: np.ndarray, table: OrganTable) -> np.ndarray:
    """Multi-label targets: float32 (C, ...) with channel c = (label == table.values[c])."""
    values = np.asarray(table.values, dtype=label.dtype).reshape((-1,) + (1,) * label.ndim)
    return (label[None] == values).astype(np.float32)


__all__ = ["LazyCase", "TrainingCase", "TrainingItem", "one_hot_organs"]
