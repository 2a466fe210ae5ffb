"""Scoring attention maps against error regions (003 §3.1 end, §4.1, Table 1).

Per case and organ:

- **error region** = FP ∪ FN of the pseudo label against the ground truth,
  i.e. ``pseudo_mask XOR gt_mask``;
- error components and attention components are the connected components
  (``scipy.ndimage.label``, 26-connectivity by default) of the error region
  and of the binarised attention map (``attention > attention_threshold``);
- **sensitivity** = error components that the attention map touches (at
  least one shared voxel) / error components: "once an error is detected, it
  counts as a hit" -- counted per component ("a group of voxels"), not per
  voxel;
- **precision** = attention components that touch the error region /
  attention components.

``min_error_ml``: error components smaller than this are left out of the
sensitivity (a one-voxel boundary speck is not an error an annotator fixes).
They still count as errors for precision: attention there does point at a
place the AI got wrong. Set it to 0 to count every component.

Undefined ratios are NaN: sensitivity with no error component, precision
with no attention component. Table 1 reports mean ± sd over cases per organ:
:func:`alqa_core.evaluation.statistics.summarize` with
``metrics=("sensitivity", "precision")``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import ndimage

from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable, canonical_organ_name
from alqa_core.volume import LabelMap

#: Error components below this volume are ignored for sensitivity (mL).
DEFAULT_MIN_ERROR_ML = 0.1


@dataclass(frozen=True)
class AttentionScore:
    case_id: str
    organ: str
    sensitivity: float
    precision: float
    error_components: int
    error_components_hit: int
    attention_components: int
    attention_components_hit: int
    ignored_error_components: int
    min_error_ml: float

    def to_record(self) -> dict:
        return asdict(self)


def error_region(pseudo_mask: np.ndarray, gt_mask: np.ndarray) -> np.ndarray:
    """FP ∪ FN of a predicted organ mask against the ground truth."""
    return np.logical_xor(np.asarray(pseudo_mask, dtype=bool), np.asarray(gt_mask, dtype=bool))


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of a non-empty ``mask``; labelling only it is much faster on a CT."""
    out = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        out.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(out)


def score_attention(
    attention: np.ndarray,
    error: np.ndarray,
    voxel_volume_ml: float,
    min_error_ml: float = DEFAULT_MIN_ERROR_ML,
    attention_threshold: float = 0.0,
    connectivity: int = 3,
    case_id: str = "",
    organ: str = "",
) -> AttentionScore:
    """Component-level sensitivity and precision of one attention map.

    ``attention``: bool, or numbers binarised by ``> attention_threshold``.
    ``error``: the error region (bool). ``connectivity``: 1 (faces), 2
    (edges) or 3 (corners: 26-neighbourhood), as
    ``scipy.ndimage.generate_binary_structure``.
    """
    att = np.asarray(attention)
    att = att if att.dtype == bool else att > attention_threshold
    err = np.asarray(error, dtype=bool)
    if att.shape != err.shape:
        raise ValueError(f"attention {att.shape} and error region {err.shape} differ in shape")
    union = att | err
    if union.any():  # else keep the (all-False) arrays: zero components each
        box = _bbox(union)
        att, err = att[box], err[box]
    structure = ndimage.generate_binary_structure(err.ndim, connectivity)

    err_lab, n_err = ndimage.label(err, structure=structure)
    sizes_ml = np.bincount(err_lab.ravel(), minlength=n_err + 1)[1:] * voxel_volume_ml
    counted = np.flatnonzero(sizes_ml >= min_error_ml) + 1
    err_hit = np.unique(err_lab[att & err])
    n_err_hit = int(np.isin(counted, err_hit).sum())

    att_lab, n_att = ndimage.label(att, structure=structure)
    n_att_hit = int(np.count_nonzero(np.unique(att_lab[att & err])))

    return AttentionScore(
        case_id=case_id,
        organ=organ,
        sensitivity=n_err_hit / counted.size if counted.size else float("nan"),
        precision=n_att_hit / n_att if n_att else float("nan"),
        error_components=int(counted.size),
        error_components_hit=n_err_hit,
        attention_components=int(n_att),
        attention_components_hit=n_att_hit,
        ignored_error_components=int(n_err - counted.size),
        min_error_ml=float(min_error_ml),
    )


def evaluate_attention(
    attention: Mapping[str, np.ndarray],
    pseudo: LabelMap,
    gt: LabelMap,
    table: OrganTable,
    organs: Sequence[str] | None = None,
    min_error_ml: float = DEFAULT_MIN_ERROR_ML,
    attention_threshold: float = 0.0,
    connectivity: int = 3,
    case_id: str = "",
) -> tuple[AttentionScore, ...]:
    """Table 1 for one case: per organ, attention map vs the pseudo label's errors.

    ``attention`` maps organ name -> that organ's attention map on the
    case's grid. ``organs`` defaults to the organs present in ``attention``
    (in table order). ``pseudo`` and ``gt`` are organ-table label maps.
    """
    where = f"case {case_id!r}" if case_id else "case"
    if not gt.grid.matches(pseudo.grid):
        raise AlqaInputError(f"{where} pseudo label", f"grid {pseudo.shape} differs from the ground truth's {gt.shape}")
    maps = {canonical_organ_name(k): v for k, v in attention.items()}
    names = (
        tuple(n for n in table.names if n in maps)
        if organs is None
        else tuple(canonical_organ_name(o) for o in organs)
    )
    out = []
    for name in names:
        if name not in maps:
            raise AlqaInputError(f"{where} attention map", f"no attention map for organ {name!r}; have {sorted(maps)}")
        att = np.asarray(maps[name])
        if att.shape != tuple(gt.shape):
            raise AlqaInputError(f"{where} attention map of {name}", f"shape {att.shape} differs from the label's {gt.shape}")
        value = table.value_of(name)
        err = error_region(pseudo.array == value, gt.array == value)
        out.append(
            score_attention(
                att, err, gt.voxel_volume_ml, min_error_ml, attention_threshold, connectivity, case_id, name
            )
        )
    return tuple(out)


__all__ = [
    "DEFAULT_MIN_ERROR_ML",
    "AttentionScore",
    "error_region",
    "evaluate_attention",
    "score_attention",
]
