"""The regions of a work package's attention map, in the order an annotator visits them.

The worklist's viewer jumps from one region to the next. A region is a
26-connected component of the package's ``attention.nii.gz`` (non-zero
voxels), the same connectivity as a reference error. Each is given the organ
of the pseudo label it overlaps most (ties go to the organs to fix, in their
order; a region over background only has no organ), its volume in mL, its
peak attention, its bounding box and a *centre*: the region's voxel nearest
its centroid, so that the crosshair always lands inside the region (the
centroid of a shell around an organ lies outside it).

Order: regions of the package's organs to fix, in task.json's order, each
organ's largest first; then every other region, largest first.

A package raised without a map (an empty ``attention.nii.gz``, e.g. a case
queued by a detector before it draws one) still leads the eye: each organ to
fix becomes one region, the organ itself (:func:`organ_regions`).

Whatever the attention maps become (issue "Attention that points at the
errors that matter"), the package's ``attention.nii.gz`` and its organs to
fix stay the interface read here. Cropping to the map's bounding box keeps
the labelling cheap on a 512x512x300 grid, where attention covers a few
percent of the volume.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from alqa_core.organs import OrganTable

#: 26-connectivity, as reference errors are counted
STRUCTURE = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class AttentionRegion:
    """One connected region of a package's attention map (voxel indices of the package's grid)."""

    rank: int  # 1-based position in the visiting order
    organ: str  # "" when the region overlaps no organ of the pseudo label
    to_fix: bool  # the organ is one of the package's organs to fix
    voxels: int
    volume_ml: float
    peak: int  # the highest attention value in the region (0..255)
    center_vox: tuple[int, int, int]  # a voxel of the region, nearest its centroid
    center_mm: tuple[float, float, float]  # that voxel's centre in world (scanner RAS) millimetres
    bbox_vox: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # inclusive (min, max) per axis
    source: str = "attention"  # "attention": a component of the map; "organ": an organ to fix, for a package without a map

    def as_dict(self) -> dict:
        return {
            "rank": self.rank, "source": self.source, "organ": self.organ, "to_fix": self.to_fix, "voxels": self.voxels, "volume_ml": self.volume_ml,
            "peak": self.peak, "center_vox": list(self.center_vox), "center_mm": list(self.center_mm), "bbox_vox": [list(b) for b in self.bbox_vox],
        }


def voxel_volume_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def attention_regions(
    attention: np.ndarray, pseudo: np.ndarray, affine: np.ndarray, table: OrganTable, organs_to_fix: tuple[str, ...] = ()
) -> tuple[AttentionRegion, ...]:
    """The regions of ``attention`` (non-zero voxels), each with its organ in ``pseudo``, in visiting order.

    ``attention`` and ``pseudo`` share one grid (a work package's), ``affine`` its voxel-to-world matrix.
    """
    attention, pseudo = np.asarray(attention), np.asarray(pseudo)
    if attention.shape != pseudo.shape or attention.ndim != 3:
        raise ValueError(f"attention {attention.shape} and pseudo label {pseudo.shape} must be one 3D grid")
    mask = attention > 0
    box = _bounding_box(mask)
    if box is None:
        return ()
    mask, att, lab = mask[box], attention[box], pseudo[box]
    labels, n = ndimage.label(mask, structure=STRUCTURE)
    inside = labels[mask]
    counts = np.bincount(inside, minlength=n + 1)
    # organ overlap per region: one bincount over (region, label value) pairs
    n_values = int(max(int(lab.max()), table.max_value)) + 1
    overlap = np.bincount(inside.astype(np.int64) * n_values + lab[mask], minlength=(n + 1) * n_values).reshape(n + 1, n_values)
    peaks = ndimage.maximum(att, labels, index=np.arange(1, n + 1))
    offset = np.array([s.start for s in box])
    ml_per_voxel = voxel_volume_ml(affine)
    order_of = {o: i for i, o in enumerate(organs_to_fix)}
    found = []
    for k, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None:
            continue
        organ = _organ_of(overlap[k], table, order_of)
        center = _center_voxel(labels[sl] == k) + np.array([s.start for s in sl]) + offset
        bbox = tuple((int(s.start + o), int(s.stop - 1 + o)) for s, o in zip(sl, offset))
        mm = (np.asarray(affine, dtype=np.float64) @ np.append(center, 1.0))[:3]
        found.append((organ, int(counts[k]), int(peaks[k - 1]), tuple(int(c) for c in center), tuple(round(float(v), 3) + 0.0 for v in mm), bbox))
    found.sort(key=lambda r: (order_of.get(r[0], len(order_of)), -r[1], r[3]))
    return tuple(
        AttentionRegion(i, organ, organ in order_of, voxels, round(voxels * ml_per_voxel, 3), peak, center, mm, bbox)
        for i, (organ, voxels, peak, center, mm, bbox) in enumerate(found, start=1)
    )


def organ_regions(pseudo: np.ndarray, affine: np.ndarray, table: OrganTable, organs_to_fix: tuple[str, ...]) -> tuple[AttentionRegion, ...]:
    """One region per organ to fix (in their order): the organ in the pseudo label, for a package whose map is empty."""
    pseudo = np.asarray(pseudo)
    ml_per_voxel = voxel_volume_ml(affine)
    found = []
    for organ in organs_to_fix:
        if organ not in table.names:
            continue
        mask = pseudo == table.value_of(organ)
        box = _bounding_box(mask)
        if box is None:
            continue  # a missed organ: nothing to point at
        center = _center_voxel(mask[box]) + np.array([b.start for b in box])
        mm = (np.asarray(affine, dtype=np.float64) @ np.append(center, 1.0))[:3]
        voxels = int(np.count_nonzero(mask[box]))
        found.append(AttentionRegion(len(found) + 1, organ, True, voxels, round(voxels * ml_per_voxel, 3), 0, tuple(int(c) for c in center),
                                     tuple(round(float(v), 3) + 0.0 for v in mm), tuple((b.start, b.stop - 1) for b in box), "organ"))
    return tuple(found)


def _bounding_box(mask: np.ndarray) -> tuple[slice, ...] | None:
    spans = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        spans.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(spans)


def _organ_of(overlap: np.ndarray, table: OrganTable, order_of: dict[str, int]) -> str:
    """The organ the region overlaps most; ties go to the organ first in the organs to fix, then the table's order."""
    best, best_key = "", None
    for organ in table.organs:
        n = int(overlap[organ.value]) if organ.value < overlap.size else 0
        if n == 0:
            continue
        key = (-n, order_of.get(organ.name, len(order_of)), organ.value)
        if best_key is None or key < best_key:
            best, best_key = organ.name, key
    return best


def _center_voxel(region: np.ndarray) -> np.ndarray:
    """The region's voxel nearest its centroid (ties: the first in C order)."""
    points = np.argwhere(region)
    centroid = points.mean(axis=0)
    return points[int(np.argmin(((points - centroid) ** 2).sum(axis=1)))]


__all__ = ["STRUCTURE", "AttentionRegion", "attention_regions", "organ_regions", "voxel_volume_ml"]
