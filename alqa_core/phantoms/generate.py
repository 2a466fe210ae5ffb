"""One synthetic abdominal CT with its full ground truth, deterministic from a seed.

``generate_case(PhantomSpec(seed=...))`` draws a patient (size, fat, organ
jitter, a smooth displacement field, bowel), paints the trunk and the organs
into a tissue map and a label map, applies the hard case if any, then turns
tissues into HU for the contrast phase, blurs slightly and adds noise.

Randomness comes from three independent streams of ``numpy.random.Generator``
keyed by the seed (anatomy, hard case, noise), so the same seed gives the same
patient whatever the phase or hard kind, and, because all random fields live
on millimetre control grids, whatever the voxel spacing.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Mapping

import nibabel as nib
import numpy as np
from scipy import ndimage

from alqa_core.errors import AlqaInputError
from alqa_core.organs import DEFAULT_ORGAN_TABLE
from alqa_core.phantoms.anatomy import (
    BODY_PLAN,
    FOV_AXIAL_MM,
    FOV_SUP_RANGE_MM,
    FOV_TOP_SUP_RANGE_MM,
    HU_MAX,
    HU_MIN,
    ORGAN_CORES,
    ORGAN_LOBES,
    PAINT_ORDER,
    PHASES,
    STOMACH_WALL_MM,
    TISSUE_HU,
    VESSEL_KNOTS,
    Lobe,
)
from alqa_core.phantoms.body import TrunkDraw, body_extent_mm, paint_trunk
from alqa_core.phantoms.deform import control_shape, displacement_controls, random_control, upsample
from alqa_core.phantoms.frame import Frame, build_frame
from alqa_core.phantoms.hard_cases import CONTRAST_EXEMPT_TISSUES, HARD_KINDS, METAL_PLAN, HardKind, hard_kind
from alqa_core.phantoms.shapes import PlacedLobe, bounding_box_mm, ellipsoid_distance, place_lobe, tube_bounding_box_mm, tube_distance, union_distance
from alqa_core.volume import CTVolume, LabelMap

#: Tissue name -> index in the tissue map (0 is air).
TISSUES: tuple[str, ...] = ("air",) + tuple(t for t in TISSUE_HU if t != "air")
TISSUE_ID: Mapping[str, int] = MappingProxyType({t: i for i, t in enumerate(TISSUES)})

_ANATOMY, _NOISE, _HARD = 0, 1, 2  # random streams


@dataclass(frozen=True)
class PhantomSpec:
    """What to generate. ``fov_mm=None``: 360 x 280 mm axial, craniocaudal extent drawn per seed."""

    seed: int
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)
    phase: str = "portal"
    hard_kind: str | None = None
    fov_mm: tuple[float, float, float] | None = None
    noise_hu: float = 15.0
    blur_sigma_mm: float = 1.0
    deformation_mm: float = 4.0
    #: orientation of the array axes (nibabel axis codes); the affine is RAS+ either way
    axcodes: str = "RAS"

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise AlqaInputError(None, f"phantom seed must be a non-negative integer, got {self.seed!r}")
        object.__setattr__(self, "seed", int(self.seed))
        spacing = tuple(float(s) for s in self.spacing_mm)
        if len(spacing) != 3 or not all(0.25 <= s <= 20.0 for s in spacing):
            raise AlqaInputError(None, f"spacing_mm must be 3 values in [0.25, 20] mm, got {self.spacing_mm!r}")
        object.__setattr__(self, "spacing_mm", spacing)
        if self.phase not in PHASES:
            raise AlqaInputError(None, f"unknown contrast phase {self.phase!r}; known: {list(PHASES)}")
        if self.hard_kind == "":
            object.__setattr__(self, "hard_kind", None)
        if self.hard_kind is not None and self.hard_kind not in HARD_KINDS:
            raise AlqaInputError(None, f"unknown hard kind {self.hard_kind!r}; known: {sorted(HARD_KINDS)}")
        if self.fov_mm is not None:
            fov = tuple(float(f) for f in self.fov_mm)
            if len(fov) != 3 or not all(60.0 <= f <= 1000.0 for f in fov):
                raise AlqaInputError(None, f"fov_mm must be 3 values in [60, 1000] mm, got {self.fov_mm!r}")
            object.__setattr__(self, "fov_mm", fov)
        if self.noise_hu < 0 or self.blur_sigma_mm < 0 or self.deformation_mm < 0:
            raise AlqaInputError(None, "noise_hu, blur_sigma_mm and deformation_mm must be >= 0")
        codes = str(self.axcodes).upper()
        axes = sorted(next((i for i, pair in enumerate(("LR", "PA", "IS")) if c in pair), -1) for c in codes)
        if len(codes) != 3 or axes != [0, 1, 2]:
            raise AlqaInputError(None, f"axcodes must name one of L/R, P/A, I/S each, got {self.axcodes!r}")
        object.__setattr__(self, "axcodes", codes)


@dataclass(frozen=True, eq=False)
class PhantomCase:
    """A generated case: CT in HU and the full ground-truth label map (organ-table values)."""

    spec: PhantomSpec
    ct: CTVolume
    labels: LabelMap
    #: organs of the table that this case does not contain (missing-organ hard cases)
    absent_organs: tuple[str, ...] = ()

    @property
    def phase(self) -> str:
        return self.spec.phase

    @property
    def hard_kind(self) -> str | None:
        return self.spec.hard_kind

    @property
    def organ_volumes_ml(self) -> dict[str, float]:
        """Volume of every organ of the table (0 for absent organs), in mL."""
        counts = np.bincount(np.asarray(self.labels.array).ravel(), minlength=DEFAULT_ORGAN_TABLE.max_value + 1)
        vox = self.labels.voxel_volume_ml
        return {o.name: float(counts[o.value]) * vox for o in DEFAULT_ORGAN_TABLE.organs}


@dataclass(frozen=True, eq=False)
class _Patient:
    fov_mm: tuple[float, float, float]
    fov_top_mm: float
    core_scale: float
    trunk: TrunkDraw
    organ_scale: Mapping[str, np.ndarray]
    organ_offset_mm: Mapping[str, np.ndarray]
    organ_euler_deg: Mapping[str, np.ndarray]
    vessel_scale: Mapping[str, float]
    vessel_lat_offset_mm: Mapping[str, float]
    stomach_gas_fraction: float
    hu_offset: Mapping[str, float]
    enhancement: float
    displacement: tuple[np.ndarray, np.ndarray, np.ndarray]
    bowel_control: np.ndarray
    gas_control: np.ndarray


def _draw_patient(spec: PhantomSpec) -> _Patient:
    """All anatomy randomness, drawn in a fixed order (independent of phase and hard kind)."""
    rng = np.random.default_rng([spec.seed, _ANATOMY])
    fov_sup = float(rng.uniform(*FOV_SUP_RANGE_MM))
    fov = spec.fov_mm or (FOV_AXIAL_MM[0], FOV_AXIAL_MM[1], fov_sup)
    fov_top = float(rng.uniform(*FOV_TOP_SUP_RANGE_MM))
    core_scale = float(np.clip(rng.normal(1.0, 0.03), 0.94, 1.06))
    plan = BODY_PLAN
    trunk = TrunkDraw(
        fat_lat_mm=float(rng.uniform(*plan.fat_mm_range)),
        fat_ap_mm=float(rng.uniform(*plan.fat_mm_range)),
        vertebra_phase_mm=float(rng.uniform(0, plan.vertebra_height_mm + plan.disc_height_mm)),
        rib_phase_mm=float(rng.uniform(0, plan.rib_period_mm)),
        bowel_threshold=float(rng.uniform(*plan.bowel_threshold_range)),
        gas_threshold=float(rng.uniform(*plan.bowel_gas_threshold_range)),
    )
    organ_scale, organ_offset, organ_euler = {}, {}, {}
    for organ in PAINT_ORDER:
        organ_scale[organ] = np.clip(rng.normal(1.0, 0.045, 3), 0.92, 1.08)
        organ_offset[organ] = np.clip(rng.normal(0.0, 3.0, 3), -6.0, 6.0)
        organ_euler[organ] = np.clip(rng.normal(0.0, 4.0, 3), -8.0, 8.0)
    vessel_scale = {v: float(np.clip(rng.normal(1.0, 0.07), 0.86, 1.14)) for v in VESSEL_KNOTS}
    vessel_lat = {v: float(np.clip(rng.normal(0.0, 2.5), -5.0, 5.0)) for v in VESSEL_KNOTS}
    gas_fraction = float(rng.uniform(0.05, 0.35))
    hu_offset = {t: float(np.clip(rng.normal(0.0, 4.0), -10.0, 10.0)) for t in TISSUE_HU}
    enhancement = float(np.clip(rng.normal(1.0, 0.08), 0.8, 1.2))
    disp = displacement_controls(rng, fov, spec.deformation_mm)
    bowel = random_control(rng, control_shape(fov, 22.0), sigma_cells=0.8)
    gas = random_control(rng, control_shape(fov, 20.0))
    return _Patient(
        fov, fov_top * core_scale, core_scale, trunk, organ_scale, organ_offset, organ_euler,
        vessel_scale, vessel_lat, gas_fraction, hu_offset, enhancement, disp, bowel, gas,
    )  # fmt: skip


def _make_frame(spec: PhantomSpec, patient: _Patient) -> Frame:
    shape = tuple(max(4, int(round(f / s))) for f, s in zip(patient.fov_mm, spec.spacing_mm))
    _, post, ant = body_extent_mm(BODY_PLAN, patient.trunk)
    ap_centre = 0.5 * (ant - post) * patient.core_scale  # body centred in the field of view
    sup_centre = patient.fov_top_mm - 0.5 * patient.fov_mm[2]
    centre = (0.0, ap_centre, sup_centre)
    origin = tuple(c - 0.5 * (n - 1) * s for c, n, s in zip(centre, shape, spec.spacing_mm))
    return build_frame(shape, spec.spacing_mm, origin, centre, patient.core_scale, patient.displacement)


def _hard_pairs(pairs, organ):
    return next((np.asarray(v, dtype=np.float64) for o, v in pairs if o == organ), None)


def _placed_lobes(organ: str, patient: _Patient, hard: HardKind) -> tuple[PlacedLobe, ...]:
    lobes = ORGAN_LOBES[organ]
    pivot = np.mean([lb.centre_mm for lb in lobes if not lb.subtract], axis=0)
    scale = patient.organ_scale[organ].copy()
    offset = patient.organ_offset_mm[organ].copy()
    extra_scale = _hard_pairs(hard.organ_scale, organ)
    extra_shift = _hard_pairs(hard.organ_shift_mm, organ)
    if extra_scale is not None:
        scale = scale * extra_scale
    if extra_shift is not None:
        offset = offset + extra_shift
    return tuple(place_lobe(lb, pivot, scale, offset, patient.organ_euler_deg[organ]) for lb in lobes)


def _mass_lobe(lobes, hard: HardKind, rng: np.random.Generator) -> PlacedLobe:
    _, index, _, radius_range = hard.mass
    radius = float(rng.uniform(*radius_range))
    centre = lobes[index].centre_mm + np.array([0.0, 6.0, 2.0]) + rng.normal(0.0, 3.0, 3)  # bulging forward
    return PlacedLobe(centre, np.full(3, radius), np.eye(3), False)


def _paint_organs(tissue, labels, allowed, frame: Frame, patient: _Patient, hard: HardKind, absent, rng_hard):
    """Paint organs in :data:`PAINT_ORDER` (a later organ wins), each on its own sub-box."""
    for organ in PAINT_ORDER:
        if organ in absent:
            continue
        value = DEFAULT_ORGAN_TABLE.value_of(organ)
        mass = None
        if organ in VESSEL_KNOTS:
            knots = VESSEL_KNOTS[organ]
            scale, lat_off = patient.vessel_scale[organ], patient.vessel_lat_offset_mm[organ]
            box = frame.box(*tube_bounding_box_mm(knots, scale, lat_off))
            d = tube_distance(frame.sub(box), knots, scale, lat_off)
        else:
            lobes = _placed_lobes(organ, patient, hard)
            if hard.mass is not None and hard.mass[0] == organ:
                mass = _mass_lobe(lobes, hard, rng_hard)
                lobes = lobes + (mass,)
            box = frame.box(*bounding_box_mm(lobes))
            d = union_distance(frame.sub(box), lobes)
        inside = (d < 1.0) & allowed[box]
        labels[box][inside] = value
        tissue[box][inside] = TISSUE_ID[organ]
        if organ in ORGAN_CORES:
            core_tissue, fraction = ORGAN_CORES[organ]
            tissue[box][inside & (d < np.float32(fraction**2))] = TISSUE_ID[core_tissue]
        if mass is not None:
            in_mass = inside & (ellipsoid_distance(frame.sub(box), mass) < 1.0)
            tissue[box][in_mass] = TISSUE_ID[hard.mass[2]]


def _paint_stomach_lumen(tissue, labels, frame: Frame, gas_fraction: float) -> None:
    """Stomach lumen (inside a wall of STOMACH_WALL_MM): fluid, gas on top (anterior, patient supine)."""
    value = DEFAULT_ORGAN_TABLE.value_of("stomach")
    where = np.nonzero(labels == value)
    if where[0].size == 0:
        return
    box = tuple(slice(int(w.min()), int(w.max()) + 1) for w in where)
    stomach = np.pad(labels[box] == value, 1)
    depth_mm = ndimage.distance_transform_edt(stomach, sampling=frame.spacing_mm)[1:-1, 1:-1, 1:-1]
    # at least one voxel of wall, whatever the spacing
    lumen = depth_mm > max(STOMACH_WALL_MM, min(frame.spacing_mm))
    if not lumen.any():
        return
    tissue[box][lumen] = TISSUE_ID["stomach_fluid"]
    ap = frame.axis_mm(1)[box[1]][None, :, None]
    ap_lumen = np.broadcast_to(ap, lumen.shape)[lumen]
    level = np.quantile(ap_lumen, 1.0 - gas_fraction) if gas_fraction < 1.0 else -np.inf
    tissue[box][lumen & (ap >= level)] = TISSUE_ID["gas"]


def _paint_metal(tissue, body, frame: Frame, rng_hard) -> tuple[float, tuple]:
    """Two pedicle screws in one vertebra; returns their height and screw lobes."""
    plan = METAL_PLAN
    sup = float(rng_hard.uniform(*plan.sup_range_mm))
    screws = []
    for side in (-1.0, 1.0):
        centre = (side * plan.screw_lat_mm, plan.screw_ap_mm, sup)
        lobe = Lobe(centre, plan.screw_semi_mm, (side * plan.screw_yaw_deg, 0.0, 0.0))
        placed = place_lobe(lobe, lobe.centre_mm, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
        box = frame.box(*bounding_box_mm((placed,)))
        inside = (ellipsoid_distance(frame.sub(box), placed) < 1.0) & body[box]
        tissue[box][inside] = TISSUE_ID["metal"]
        screws.append(placed)
    return sup, tuple(screws)


def _streaks(hu, body, frame: Frame, sup_mm: float, screws, rng_hard) -> None:
    """Bright and dark streaks radiating from the screws, in a slab around them (in place)."""
    plan = METAL_PLAN
    sup_axis = frame.axis_mm(2) * np.float32(1.0 / frame.core_scale)
    taper = np.clip(1.0 - np.abs(sup_axis - sup_mm) / plan.slab_half_mm, 0.0, 1.0).astype(np.float32)
    ks = np.flatnonzero(taper > 0)
    if ks.size == 0:
        return
    lat = frame.axis_mm(0)[:, None] / np.float32(frame.core_scale)
    ap = frame.axis_mm(1)[None, :] / np.float32(frame.core_scale)
    pattern = np.zeros((lat.shape[0], ap.shape[1]), dtype=np.float32)
    for screw in screws:
        dx, dy = lat - np.float32(screw.centre_mm[0]), ap - np.float32(screw.centre_mm[1])
        r = np.sqrt(dx * dx + dy * dy)
        fade = np.exp(-r / np.float32(plan.streak_decay_mm))
        angles = rng_hard.uniform(0, np.pi, plan.n_streaks)
        amplitudes = rng_hard.uniform(*plan.streak_amplitude_hu, plan.n_streaks)
        for theta, amp in zip(angles, amplitudes):
            sign = 1.0 if rng_hard.random() < 0.6 else -1.0
            perp = -np.sin(theta) * dx + np.cos(theta) * dy
            pattern += np.float32(sign * amp) * np.exp(-((perp / np.float32(plan.streak_width_mm)) ** 2)) * fade
    # dark band along the line joining the screws (photon starvation)
    mid_ap = np.float32(0.5 * (screws[0].centre_mm[1] + screws[1].centre_mm[1]))
    band = np.exp(-(((ap - mid_ap) / np.float32(4.0)) ** 2)) * np.exp(-np.abs(lat) / np.float32(plan.streak_decay_mm))
    pattern += np.float32(plan.dark_band_hu) * band
    slab = slice(int(ks[0]), int(ks[-1]) + 1)
    hu[:, :, slab] += pattern[:, :, None] * taper[None, None, slab] * body[:, :, slab]


def _tissue_lut(spec: PhantomSpec, patient: _Patient, hard: HardKind) -> np.ndarray:
    """HU of each tissue index for this phase, patient and hard kind."""
    col = PHASES.index(spec.phase)
    lut = np.zeros(len(TISSUES) + 1, dtype=np.float32)
    for name, i in TISSUE_ID.items():
        row = TISSUE_HU[name]
        hu = row[0] + patient.enhancement * (row[col] - row[0]) + patient.hu_offset[name]
        if name not in CONTRAST_EXEMPT_TISSUES:
            hu = hard.contrast_pivot_hu + hard.contrast_scale * (hu - hard.contrast_pivot_hu)
        lut[i] = TISSUE_HU[name][0] if name in ("air", "metal") else hu
    return lut


def _reorient(array: np.ndarray, affine: np.ndarray, axcodes: str):
    if axcodes == "RAS":
        return array, affine
    transform = nib.orientations.ornt_transform(
        nib.orientations.axcodes2ornt("RAS"), nib.orientations.axcodes2ornt(tuple(axcodes))
    )
    out = nib.orientations.apply_orientation(array, transform)
    return np.ascontiguousarray(out), affine @ nib.orientations.inv_ornt_aff(transform, array.shape)


def generate_case(spec: PhantomSpec) -> PhantomCase:
    """Generate one phantom (deterministic in ``spec``)."""
    hard = hard_kind(spec.hard_kind)
    patient = _draw_patient(spec)
    rng_hard = np.random.default_rng([spec.seed, _HARD])
    absent = (str(rng_hard.choice(hard.remove_one_of)),) if hard.remove_one_of else ()
    trunk = patient.trunk
    if hard.extra_lateral_fat_mm:
        trunk = replace(trunk, fat_lat_mm=trunk.fat_lat_mm + hard.extra_lateral_fat_mm)

    frame = _make_frame(spec, patient)
    tissue = np.zeros(frame.shape, dtype=np.uint8)
    labels = np.zeros(frame.shape, dtype=np.uint8)
    bowel = upsample(patient.bowel_control, frame.shape)
    gas = upsample(patient.gas_control, frame.shape)
    body, allowed = paint_trunk(tissue, frame, BODY_PLAN, trunk, TISSUE_ID, bowel, gas)
    _paint_organs(tissue, labels, allowed, frame, patient, hard, absent, rng_hard)
    gas_fraction = patient.stomach_gas_fraction if hard.stomach_gas_fraction is None else hard.stomach_gas_fraction
    _paint_stomach_lumen(tissue, labels, frame, gas_fraction)

    if hard.mirror_lr:  # the grid is centred on the midline, so a flip of axis 0 mirrors x -> -x
        tissue, labels, body = tissue[::-1].copy(), labels[::-1].copy(), body[::-1].copy()
        for a, b in hard.swap_after_mirror:
            va, vb = DEFAULT_ORGAN_TABLE.value_of(a), DEFAULT_ORGAN_TABLE.value_of(b)
            lut = np.arange(256, dtype=np.uint8)
            lut[va], lut[vb] = vb, va
            labels = lut[labels]
    screws = _paint_metal(tissue, body, frame, rng_hard) if hard.metal_implant else None

    hu = _tissue_lut(spec, patient, hard)[tissue]
    if screws is not None:
        _streaks(hu, body, frame, screws[0], screws[1], rng_hard)
    if spec.blur_sigma_mm > 0:
        hu = ndimage.gaussian_filter(hu, [spec.blur_sigma_mm / s for s in spec.spacing_mm], mode="nearest")
    rng_noise = np.random.default_rng([spec.seed, _NOISE])
    noise = rng_noise.standard_normal(frame.shape, dtype=np.float32)
    noise *= np.float32(spec.noise_hu * hard.noise_scale)
    hu += noise
    np.clip(hu, HU_MIN, HU_MAX, out=hu)

    hu, ct_affine = _reorient(hu, frame.affine, spec.axcodes)
    labels, label_affine = _reorient(labels, frame.affine, spec.axcodes)
    return PhantomCase(spec, CTVolume(hu, ct_affine), LabelMap(labels, label_affine), absent)


__all__ = ["PhantomCase", "PhantomSpec", "TISSUES", "TISSUE_ID", "generate_case"]
