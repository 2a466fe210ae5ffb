"""Attention size: how much of a case, organ and axial slice the attention map covers.

Definitions (``region`` = voxels where the organ's heatmap is > 0, i.e. the
union of the cleaned Eq. 1-2 binaries and Eq. 3; ``h`` = the heatmap in
[0, 1]; axial slices are the last array axis, ``k``):

- ``attention_ml``: the region's volume, voxels x prod(spacing_mm) / 1000.
  The binary region is the default measure because its size does not depend
  on the per-organ max normalisation of the heatmap (one strong voxel would
  otherwise rescale a whole organ), and being in mL, resampling a scan does
  not change it.
- ``weighted_ml``: sum of ``h`` x voxel volume (the heatmap-weighted volume).
- ``organ_ml``: voxels where the ensemble mean is > 0.5, in mL.
- ``relative``: ``attention_ml / max(organ_ml, min_organ_ml)``, so a small
  organ is not drowned by the liver, and an organ the ensemble hardly
  predicts (but some member does) divides by the floor, not by ~0.
- ``ml_per_cm`` and ``relative_per_cm``: divided by the scan length along
  ``k`` in cm (slices x slice spacing). This is AbdomenAtlas's normalisation
  by slice count, in physical units: at a fixed spacing it ranks cases
  exactly as dividing by the slice count does, and it does not change when a
  scan is resampled.
- ``abdomenatlas``: the public code's own number, sum of ``h`` over voxels
  divided by the slice count (voxel units; for comparison only).
- ``slice_ml``: the region's volume in each axial slice (the slice-level
  curve used by slice-sampling strategies).

Organs that are not scored (annotated by the case's dataset, or covered by
no member) have all sizes 0 and ``scored = False``. Case totals sum scored
organs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _readonly(array: np.ndarray) -> np.ndarray:
    out = np.array(array, dtype=np.float64)
    out.flags.writeable = False
    return out


_TOTALS = ("attention_ml", "weighted_ml", "relative", "ml_per_cm", "relative_per_cm", "abdomenatlas")


@dataclass(frozen=True, eq=False)
class OrganAttentionSize:
    organ: str
    scored: bool
    attention_voxels: int
    attention_ml: float
    weighted_ml: float
    organ_ml: float
    relative: float
    ml_per_cm: float
    relative_per_cm: float
    abdomenatlas: float
    slice_ml: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "slice_ml", _readonly(self.slice_ml))


@dataclass(frozen=True)
class AttentionRecords:
    """Rows for the catalog tables of the same names (one dict per row)."""

    attention_case: tuple[dict, ...]
    attention_organ: tuple[dict, ...]
    attention_slice: tuple[dict, ...]


@dataclass(frozen=True, eq=False)
class AttentionSize:
    """Per-case attention size; ``organs`` in channel order."""

    case_id: str
    dataset: str
    spacing_mm: tuple[float, float, float]
    n_slices: int
    organs: tuple[OrganAttentionSize, ...]

    @property
    def length_cm(self) -> float:
        return self.n_slices * self.spacing_mm[2] / 10.0

    def organ(self, name: str) -> OrganAttentionSize:
        for o in self.organs:
            if o.organ == name:
                return o
        raise KeyError(f"no organ {name!r} in attention size of case {self.case_id!r}; have {[o.organ for o in self.organs]}")

    def total(self, measure: str) -> float:
        if measure not in _TOTALS:
            raise ValueError(f"unknown attention measure {measure!r}; known: {_TOTALS}")
        return float(sum(getattr(o, measure) for o in self.organs if o.scored))

    @property
    def attention_ml(self) -> float:
        return self.total("attention_ml")

    @property
    def relative(self) -> float:
        return self.total("relative")

    @property
    def relative_per_cm(self) -> float:
        return self.total("relative_per_cm")

    @property
    def slice_ml(self) -> np.ndarray:
        """Attention mL per axial slice, summed over scored organs."""
        out = np.zeros(self.n_slices, dtype=np.float64)
        for o in self.organs:
            if o.scored:
                out += o.slice_ml
        return out

    def to_records(self, round_index: int) -> AttentionRecords:
        key = {"case_id": self.case_id, "round": int(round_index), "dataset": self.dataset}
        case = {
            **key,
            "n_slices": self.n_slices,
            "length_cm": self.length_cm,
            "spacing_i_mm": self.spacing_mm[0],
            "spacing_j_mm": self.spacing_mm[1],
            "spacing_k_mm": self.spacing_mm[2],
            "organs_scored": sum(o.scored for o in self.organs),
            **{m: self.total(m) for m in _TOTALS},
        }
        organs = tuple(
            {
                **key,
                "organ": o.organ,
                "scored": o.scored,
                "attention_voxels": o.attention_voxels,
                "organ_ml": o.organ_ml,
                **{m: float(getattr(o, m)) for m in _TOTALS},
            }
            for o in self.organs
        )
        slices = tuple(
            {**key, "organ": o.organ, "slice": k, "attention_ml": float(v)}
            for o in self.organs
            if o.scored
            for k, v in enumerate(o.slice_ml)
        )
        return AttentionRecords(attention_case=(case,), attention_organ=organs, attention_slice=slices)


def organ_size(
    organ: str,
    *,
    scored: bool,
    region_voxels: np.ndarray,
    heat_sum: float,
    organ_voxels: int,
    shape: tuple[int, int, int],
    spacing_mm: tuple[float, float, float],
    min_organ_ml: float,
) -> OrganAttentionSize:
    """Sizes of one organ from its region (sorted flat voxel indices) and heatmap sum (h in [0, 1])."""
    n_slices = shape[2]
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    length_cm = n_slices * spacing_mm[2] / 10.0
    per_slice = np.bincount(np.asarray(region_voxels) % n_slices, minlength=n_slices).astype(np.float64) * voxel_ml
    attention_ml = region_voxels.size * voxel_ml
    organ_ml = organ_voxels * voxel_ml
    relative = attention_ml / max(organ_ml, min_organ_ml)
    return OrganAttentionSize(
        organ=organ,
        scored=scored,
        attention_voxels=int(region_voxels.size),
        attention_ml=attention_ml,
        weighted_ml=heat_sum * voxel_ml,
        organ_ml=organ_ml,
        relative=relative,
        ml_per_cm=attention_ml / length_cm,
        relative_per_cm=relative / length_cm,
        abdomenatlas=heat_sum / n_slices,
        slice_ml=per_slice,
    )


def unscored_size(organ: str, n_slices: int) -> OrganAttentionSize:
    return OrganAttentionSize(organ, False, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, np.zeros(n_slices))
