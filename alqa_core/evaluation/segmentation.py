"""Per-organ segmentation metrics: Dice, NSD, HD95, HD, MSD, RVE.

Definitions (004 §"Evaluation", 003 Appendix Table 5):

- Dice ``2|P ∩ G| / (|P| + |G|)``.
- Surface distances come from MONAI
  (:func:`monai.metrics.utils.get_edge_surface_distance`, edges by binary
  erosion, exact Euclidean distances in mm with the voxel spacing). They are
  computed ONCE per (pred, gt) pair, in both directions, and every distance
  metric is derived from them, as DeepMind's ``surface-distance`` library
  does:

  - NSD at ``tolerance_mm`` τ: ``(#{d_pg <= τ} + #{d_gp <= τ}) / (#d_pg + #d_gp)``
    (boundary size counted in edge voxels, MONAI's ``use_subvoxels=False``);
  - HD95: ``max(q95(d_pg), q95(d_gp))`` with linear interpolation (MONAI's
    ``compute_hausdorff_distance(percentile=95)``); HD: the same with the max;
  - MSD: the mean of all distances of both directions pooled (MONAI's
    ``compute_average_surface_distance(symmetric=True)``).
- RVE, signed: ``(V_pred - V_gt) / V_gt`` as a fraction. 004 reports
  ``100 * |RVE|`` in percent.

Empty masks, explicitly (MONAI would give inf or NaN with a warning):

===================  =====  =====  ===================  =========
case                 Dice   NSD    HD95 / HD / MSD       RVE
===================  =====  =====  ===================  =========
both empty           1      1      0                     0
gt empty, pred not   0      0      NaN (undefined)       NaN
pred empty, gt not   0      0      NaN (undefined)       -1
===================  =====  =====  ===================  =========

Volumes (``pred_ml``, ``gt_ml``) are recorded, so a report can filter the
both-empty rows or count the misses; summaries count NaNs as ``n_missing``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields
from typing import Mapping, Sequence

import numpy as np
import torch
from monai.metrics.utils import get_edge_surface_distance

from alqa_core.errors import AlqaInputError
from alqa_core.organs import OrganTable, canonical_organ_name
from alqa_core.volume import LabelMap

#: Default NSD tolerance. Recorded with every result.
DEFAULT_TOLERANCE_MM = 2.0


@dataclass(frozen=True, eq=False)
class SurfaceDistances:
    """Edge-voxel distances (mm) of one (pred, gt) pair, both directions."""

    pred_to_gt_mm: np.ndarray
    gt_to_pred_mm: np.ndarray

    def nsd(self, tolerance_mm: float) -> float:
        total = self.pred_to_gt_mm.size + self.gt_to_pred_mm.size
        close = np.count_nonzero(self.pred_to_gt_mm <= tolerance_mm) + np.count_nonzero(
            self.gt_to_pred_mm <= tolerance_mm
        )
        return float(close) / float(total)

    def hausdorff(self, percentile: float | None = 95.0) -> float:
        """Symmetric Hausdorff distance; ``percentile=None`` for the maximum."""
        if percentile is None:
            return float(max(self.pred_to_gt_mm.max(), self.gt_to_pred_mm.max()))
        q = percentile / 100.0
        return float(max(np.quantile(self.pred_to_gt_mm, q), np.quantile(self.gt_to_pred_mm, q)))

    def mean(self) -> float:
        """Symmetric mean surface distance (both directions pooled)."""
        return float(np.concatenate([self.pred_to_gt_mm, self.gt_to_pred_mm]).astype(np.float64).mean())


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing_mm: Sequence[float]) -> SurfaceDistances:
    """Both directions' edge distances of two NON-EMPTY boolean masks, via MONAI."""
    p = torch.from_numpy(np.ascontiguousarray(pred, dtype=bool))
    g = torch.from_numpy(np.ascontiguousarray(gt, dtype=bool))
    if not bool(p.any()) or not bool(g.any()):
        raise ValueError("surface_distances needs two non-empty masks (empty masks are handled by the caller)")
    with warnings.catch_warnings():
        # MONAI 1.6 itself passes get_mask_edges' deprecated always_return_as_numpy;
        # nothing a caller can change, so keep it out of every evaluation log.
        warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
        _, (d_pg, d_gp), _ = get_edge_surface_distance(
            p, g, distance_metric="euclidean", spacing=[float(s) for s in spacing_mm], symmetric=True, warn_empty=False
        )
    return SurfaceDistances(
        np.asarray(d_pg.cpu().numpy(), dtype=np.float32), np.asarray(d_gp.cpu().numpy(), dtype=np.float32)
    )


@dataclass(frozen=True)
class OrganMetrics:
    """The metrics of one organ of one case (a row of the catalog's ``metrics`` table)."""

    case_id: str
    organ: str
    dice: float
    nsd: float
    tolerance_mm: float
    hd95_mm: float
    hd_mm: float
    msd_mm: float
    rve: float
    pred_ml: float
    gt_ml: float

    def to_record(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def to_records(rows: Sequence) -> list[dict]:
    """Rows of frozen metric records (anything with ``to_record``) as dicts."""
    return [r.to_record() for r in rows]


def mask_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_mm: Sequence[float],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    case_id: str = "",
    organ: str = "",
) -> OrganMetrics:
    """All metrics of one pair of boolean masks on one grid (see module doc)."""
    p = np.asarray(pred, dtype=bool)
    g = np.asarray(gt, dtype=bool)
    if p.shape != g.shape:
        raise ValueError(f"pred and gt masks differ in shape: {p.shape} vs {g.shape}")
    if not np.isfinite(tolerance_mm) or tolerance_mm < 0:
        raise ValueError(f"tolerance_mm must be finite and >= 0, got {tolerance_mm}")
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    n_p, n_g = int(np.count_nonzero(p)), int(np.count_nonzero(g))
    n_both = int(np.count_nonzero(p & g))
    # Dice from the counts we need for RVE anyway (one pass, no one-hot tensors);
    # tests check it against monai.metrics.compute_dice.
    dice = 1.0 if n_p + n_g == 0 else 2.0 * n_both / (n_p + n_g)
    rve = (n_p - n_g) / n_g if n_g else (0.0 if n_p == 0 else float("nan"))
    if n_p and n_g:
        d = surface_distances(p, g, spacing_mm)
        nsd, hd95, hd, msd = d.nsd(tolerance_mm), d.hausdorff(95.0), d.hausdorff(None), d.mean()
    elif n_p == 0 and n_g == 0:
        nsd, hd95, hd, msd = 1.0, 0.0, 0.0, 0.0
    else:
        nsd, hd95, hd, msd = 0.0, float("nan"), float("nan"), float("nan")
    return OrganMetrics(
        case_id=case_id,
        organ=organ,
        dice=float(dice),
        nsd=float(nsd),
        tolerance_mm=float(tolerance_mm),
        hd95_mm=hd95,
        hd_mm=hd,
        msd_mm=msd,
        rve=float(rve),
        pred_ml=n_p * voxel_ml,
        gt_ml=n_g * voxel_ml,
    )


def evaluate_case(
    pred: LabelMap,
    gt: LabelMap,
    table: OrganTable,
    organs: Sequence[str] | None = None,
    tolerance_mm: float | Mapping[str, float] = DEFAULT_TOLERANCE_MM,
    case_id: str = "",
) -> tuple[OrganMetrics, ...]:
    """Per-organ metrics of ``pred`` against ``gt`` (both organ-table numbering).

    ``organs``: which to score (default: all of the table; for partial ground
    truth pass the organs it annotates). ``tolerance_mm``: one NSD tolerance,
    or one per organ name. Grids must match (AlqaInputError otherwise).
    """
    where = f"case {case_id!r} prediction" if case_id else "prediction"
    if not gt.grid.matches(pred.grid):
        raise AlqaInputError(
            where,
            f"grid {pred.shape} with affine {np.round(pred.affine, 3).tolist()} differs from the ground truth's "
            f"{gt.shape} with affine {np.round(gt.affine, 3).tolist()}",
        )
    names = table.names if organs is None else tuple(canonical_organ_name(o) for o in organs)
    spacing = gt.spacing_mm
    out = []
    for name in names:
        value = table.value_of(name)
        tol = tolerance_mm[name] if isinstance(tolerance_mm, Mapping) else tolerance_mm
        out.append(mask_metrics(pred.array == value, gt.array == value, spacing, tol, case_id, name))
    return tuple(out)


__all__ = [
    "DEFAULT_TOLERANCE_MM",
    "OrganMetrics",
    "SurfaceDistances",
    "evaluate_case",
    "mask_metrics",
    "surface_distances",
    "to_records",
]
