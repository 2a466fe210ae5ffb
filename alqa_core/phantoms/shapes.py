"""Implicit shapes evaluated on coordinate arrays (mm): ellipsoids, tubes, super-ellipses.

Functions take coordinate arrays (any broadcastable shapes, usually a cropped
sub-box of the volume) and return a normalised squared distance ``d``: the
point is inside where ``d < 1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from alqa_core.phantoms.anatomy import Lobe, VesselKnot


@dataclass(frozen=True)
class PlacedLobe:
    """A lobe after per-organ jitter: centre, semi-axes and rotation matrix (lobe -> frame)."""

    centre_mm: np.ndarray
    semi_axes_mm: np.ndarray
    rotation: np.ndarray
    subtract: bool

    def half_extent_mm(self) -> np.ndarray:
        """Half size of the axis-aligned box around the rotated ellipsoid (exact)."""
        return np.sqrt(((self.rotation * self.semi_axes_mm[None, :]) ** 2).sum(axis=1))


def place_lobe(lobe: Lobe, pivot_mm, scale, offset_mm, extra_euler_deg=(0.0, 0.0, 0.0)) -> PlacedLobe:
    """Scale a lobe about ``pivot_mm`` (centre and semi-axes), shift it, and add a rotation."""
    pivot = np.asarray(pivot_mm, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    centre = pivot + (np.asarray(lobe.centre_mm) - pivot) * scale + np.asarray(offset_mm)
    rot = Rotation.from_euler("zxy", np.add(lobe.euler_deg, extra_euler_deg), degrees=True).as_matrix()
    # Each lobe axis (a column of ``rot``) stretches by how much the organ scale
    # lengthens its direction; exact for axis-aligned lobes, close for tilted ones.
    semi = np.asarray(lobe.semi_axes_mm, dtype=np.float64) * np.linalg.norm(scale[:, None] * rot, axis=0)
    return PlacedLobe(centre, semi, rot, lobe.subtract)


def ellipsoid_distance(coords, lobe: PlacedLobe) -> np.ndarray:
    """``sum((R^T (p - c)) / semi)^2`` over the coordinate arrays ``coords = (lat, ap, sup)``."""
    d = [c - np.float32(m) for c, m in zip(coords, lobe.centre_mm)]
    out = None
    for axis in range(3):
        r = lobe.rotation[:, axis]
        u = d[0] * np.float32(r[0]) + d[1] * np.float32(r[1]) + d[2] * np.float32(r[2])
        u *= np.float32(1.0 / lobe.semi_axes_mm[axis])
        out = u * u if out is None else out + u * u
    return out


def union_distance(coords, lobes: tuple[PlacedLobe, ...]) -> np.ndarray:
    """Normalised distance of the organ: min over added lobes; subtracted lobes push it to >= 1."""
    added = [ellipsoid_distance(coords, lb) for lb in lobes if not lb.subtract]
    d = added[0] if len(added) == 1 else np.minimum.reduce(added)
    for lb in lobes:
        if lb.subtract:
            hole = ellipsoid_distance(coords, lb) < 1.0
            d = np.where(hole, np.maximum(d, np.float32(1.0)), d)
    return d


def bounding_box_mm(lobes: tuple[PlacedLobe, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned (lo, hi) corners around the added lobes."""
    added = [lb for lb in lobes if not lb.subtract]
    lo = np.min([lb.centre_mm - lb.half_extent_mm() for lb in added], axis=0)
    hi = np.max([lb.centre_mm + lb.half_extent_mm() for lb in added], axis=0)
    return lo, hi


def tube_distance(coords, knots: tuple[VesselKnot, ...], radius_scale: float = 1.0, lat_offset_mm: float = 0.0):
    """Elliptic tube whose section is interpolated along ``sup`` between knots."""
    lat, ap, sup = coords
    z = np.array([k.sup_mm for k in knots])[::-1]  # np.interp needs increasing x

    def along(attr):
        return np.interp(sup, z, np.array([getattr(k, attr) for k in knots])[::-1]).astype(np.float32)

    c_lat = along("lat_mm") + np.float32(lat_offset_mm)
    u = (lat - c_lat) / (along("semi_lat_mm") * np.float32(radius_scale))
    v = (ap - along("ap_mm")) / (along("semi_ap_mm") * np.float32(radius_scale))
    return u * u + v * v


def tube_bounding_box_mm(knots: tuple[VesselKnot, ...], radius_scale: float = 1.0, lat_offset_mm: float = 0.0):
    lat_lo = min(k.lat_mm - k.semi_lat_mm * radius_scale for k in knots) + lat_offset_mm
    lat_hi = max(k.lat_mm + k.semi_lat_mm * radius_scale for k in knots) + lat_offset_mm
    ap_lo = min(k.ap_mm - k.semi_ap_mm * radius_scale for k in knots)
    ap_hi = max(k.ap_mm + k.semi_ap_mm * radius_scale for k in knots)
    return np.array([lat_lo, ap_lo, -np.inf]), np.array([lat_hi, ap_hi, np.inf])


def superellipse_inside(lat, ap, semi_lat, semi_ap_post, semi_ap_ant, exponent: float) -> np.ndarray:
    """``|lat/a|^p + |ap/b|^p < 1``, with a different ``b`` in front of and behind ``ap = 0``.

    ``p = 2`` (an ellipse) takes a fast path without ``pow``.
    """
    b_inv = np.where(ap >= 0, np.float32(1.0 / semi_ap_ant), np.float32(1.0 / semi_ap_post))
    u = lat * np.float32(1.0 / semi_lat)
    v = ap * b_inv
    if exponent == 2.0:
        u *= u
        v *= v
    else:
        p = np.float32(exponent)
        u = np.abs(u) ** p
        v = np.abs(v) ** p
    u += v
    return u < np.float32(1.0)


def ellipse2d_distance(lat, ap, centre, semi) -> np.ndarray:
    u = (lat - np.float32(centre[0])) / np.float32(semi[0])
    v = (ap - np.float32(centre[1])) / np.float32(semi[1])
    return u * u + v * v


__all__ = [
    "PlacedLobe",
    "bounding_box_mm",
    "ellipse2d_distance",
    "ellipsoid_distance",
    "place_lobe",
    "superellipse_inside",
    "tube_bounding_box_mm",
    "tube_distance",
    "union_distance",
]
