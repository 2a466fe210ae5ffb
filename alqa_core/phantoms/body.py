"""The trunk of a phantom: body outline, fat, muscle wall, spine, ribs, bowel, couch.

Paints tissue indices into a tissue map and returns the mask where organs may
lie (inside the muscle wall, outside spine and back muscles).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from alqa_core.phantoms.anatomy import BodyPlan
from alqa_core.phantoms.frame import Frame
from alqa_core.phantoms.shapes import ellipse2d_distance, superellipse_inside


@dataclass(frozen=True)
class TrunkDraw:
    """The patient's trunk parameters."""

    fat_lat_mm: float
    fat_ap_mm: float
    vertebra_phase_mm: float
    rib_phase_mm: float
    bowel_threshold: float
    gas_threshold: float


def body_extent_mm(plan: BodyPlan, draw: TrunkDraw) -> tuple[float, float, float]:
    """(lateral half width, posterior extent, anterior extent) of the skin, unscaled."""
    a, b = plan.cavity_semi_mm
    w = plan.muscle_wall_mm
    return a + w + draw.fat_lat_mm, b + w + draw.fat_ap_mm, b + w + draw.fat_ap_mm * plan.anterior_fat_factor


def paint_trunk(
    tissue: np.ndarray,
    frame: Frame,
    plan: BodyPlan,
    draw: TrunkDraw,
    tissue_id,
    bowel_field: np.ndarray,
    gas_field: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Paint the trunk into ``tissue`` (a fresh array owned by the caller).

    Returns ``(body, allowed)``: the body mask and where organs may be painted.
    """
    lat, ap, sup = frame.coords
    a, b = plan.cavity_semi_mm
    w = plan.muscle_wall_mm
    p = plan.cavity_exponent
    half_w, post, ant = body_extent_mm(plan, draw)

    body = superellipse_inside(lat, ap, half_w, post, ant, p)
    muscle = superellipse_inside(lat, ap, a + w, b + w, b + w, p)
    cavity = superellipse_inside(lat, ap, a, b, b, p)
    muscle &= body
    cavity &= body

    tissue[body] = tissue_id["fat"]
    tissue[muscle] = tissue_id["muscle"]
    # Inside the wall: mesenteric fat with bowel loops, some holding gas.
    # Fewer loops high up, where the solid organs are.
    threshold = np.float32(draw.bowel_threshold) + np.float32(plan.bowel_rise_per_mm) * np.maximum(
        sup - np.float32(plan.bowel_rise_from_mm), np.float32(0.0)
    )
    bowel = cavity & (bowel_field > threshold)
    tissue[cavity] = tissue_id["visceral_fat"]
    tissue[bowel] = tissue_id["bowel"]
    tissue[bowel & (gas_field > np.float32(draw.gas_threshold))] = tissue_id["gas"]

    allowed = cavity.copy()
    _paint_ribs(tissue, frame, plan, draw, tissue_id, muscle & ~cavity)
    _paint_spine(tissue, allowed, body, frame, plan, draw, tissue_id)
    _paint_couch(tissue, frame, plan, post, tissue_id["couch"])
    return body, allowed


def _paint_ribs(tissue, frame: Frame, plan: BodyPlan, draw: TrunkDraw, tissue_id, wall) -> None:
    """Ribs: bands of bone in the muscle wall, sloping down towards the front.

    Evaluated on the wall voxels only (a thin ring), not on the whole box.
    """
    top = frame.box((-np.inf, -np.inf, plan.ribs_bottom_mm - 3.2 * plan.rib_slope_mm_per_rad), (np.inf, np.inf, np.inf))
    idx = np.nonzero(wall[top])
    lat, ap, sup = (c[top][idx] for c in frame.coords)
    phi = np.arctan2(np.abs(lat), -ap)  # 0 at the back midline, pi at the front midline
    level = sup + np.float32(plan.rib_slope_mm_per_rad) * phi
    in_period = np.mod(level - np.float32(draw.rib_phase_mm), np.float32(plan.rib_period_mm))
    on_rib = in_period < np.float32(plan.rib_thickness_mm)
    on_rib &= level > np.float32(plan.ribs_bottom_mm)
    on_rib &= (phi > np.float32(0.45)) & (phi < np.float32(np.pi - plan.rib_anterior_gap_rad))
    sub = tissue[top]
    sub[tuple(i[on_rib] for i in idx)] = tissue_id["bone_cortical"]


def _paint_spine(tissue, allowed, body, frame: Frame, plan: BodyPlan, draw: TrunkDraw, tissue_id) -> None:
    """Vertebrae with discs, canal, arch and spinous process; paraspinal and psoas muscles."""
    vc = plan.vertebra_centre_mm
    box = frame.box((-75.0, vc[1] - plan.spinous_offset_mm - 20.0, -np.inf), (75.0, vc[1] + 30.0, np.inf))
    lat, ap, sup = frame.sub(box)
    t = tissue[box]
    inside = body[box]
    blocked = np.zeros(t.shape, dtype=bool)

    for side in (-1.0, 1.0):
        c = (side * plan.paraspinal_centre_mm[0], plan.paraspinal_centre_mm[1])
        m = (ellipse2d_distance(lat, ap, c, plan.paraspinal_semi_mm) < 1.0) & inside
        t[m] = tissue_id["muscle"]
        blocked |= m
        growth = np.clip((plan.psoas_top_mm - sup) / np.float32(plan.psoas_growth_mm), 0.0, 1.0)
        growth = np.where(growth > 0, np.maximum(growth, np.float32(0.2)), np.float32(1e-3))
        semi = (plan.psoas_semi_mm[0] * growth, plan.psoas_semi_mm[1] * growth)
        c = (side * plan.psoas_centre_mm[0], plan.psoas_centre_mm[1])
        m = (ellipse2d_distance(lat, ap, c, semi) < 1.0) & inside
        t[m] = tissue_id["muscle"]
        blocked |= m

    period = plan.vertebra_height_mm + plan.disc_height_mm
    level = np.mod(sup - np.float32(draw.vertebra_phase_mm), np.float32(period))
    in_vertebra = level < np.float32(plan.vertebra_height_mm)
    endplate = in_vertebra & (
        (level < np.float32(plan.cortical_mm)) | (level > np.float32(plan.vertebra_height_mm - plan.cortical_mm))
    )
    semi = plan.vertebra_semi_mm
    inner = (semi[0] - plan.cortical_mm, semi[1] - plan.cortical_mm)
    vbody = ellipse2d_distance(lat, ap, vc, semi) < 1.0
    core = ellipse2d_distance(lat, ap, vc, inner) < 1.0
    t[vbody & ~in_vertebra] = tissue_id["disc"]
    t[vbody & in_vertebra] = tissue_id["bone_cortical"]
    t[core & in_vertebra & ~endplate] = tissue_id["bone_cancellous"]

    canal_c = (vc[0], vc[1] - plan.canal_offset_mm)
    canal_d = ellipse2d_distance(lat, ap, canal_c, (plan.canal_radius_mm, plan.canal_radius_mm))
    arch = (canal_d >= 1.0) & (canal_d < (plan.arch_radius_mm / plan.canal_radius_mm) ** 2)
    arch &= (ap < np.float32(canal_c[1] + 4.0)) & in_vertebra
    spinous = ellipse2d_distance(lat, ap, (vc[0], vc[1] - plan.spinous_offset_mm), plan.spinous_semi_mm) < 1.0
    spinous &= level < np.float32(0.8 * plan.vertebra_height_mm)
    posterior = (arch | spinous) & inside & ~vbody
    t[posterior] = tissue_id["bone_cortical"]
    canal = canal_d < 1.0
    t[canal] = tissue_id["csf"]
    blocked |= vbody | posterior | canal
    allowed[box] &= ~blocked


def _paint_couch(tissue, frame: Frame, plan: BodyPlan, posterior_extent_mm: float, couch_id: int) -> None:
    """A flat couch below the patient, in undisplaced coordinates (it is not anatomy)."""
    lat = frame.axis_mm(0)
    ap = frame.axis_mm(1)
    top = -posterior_extent_mm * frame.core_scale - frame.margin_mm - plan.couch_gap_mm
    rows = np.flatnonzero((ap <= top) & (ap > top - plan.couch_thickness_mm))
    cols = np.flatnonzero(np.abs(lat) < plan.couch_half_width_mm)
    if rows.size and cols.size:
        region = tissue[cols[0] : cols[-1] + 1, rows[0] : rows[-1] + 1]  # a view
        region[region == 0] = couch_id


__all__ = ["TrunkDraw", "body_extent_mm", "paint_trunk"]
