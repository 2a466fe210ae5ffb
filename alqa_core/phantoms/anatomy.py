"""Phantom anatomy as data: organ shapes, tissue HU by contrast phase, paint order.

Everything here is a table. The generator (:mod:`alqa_core.phantoms.generate`)
only interprets it, so changing an organ's size, position or enhancement is
editing a row, never adding a branch.

Anatomical frame (millimetres), used by every position in this module:

- ``lat``: + towards the patient's **right**. This is RAS+ ``x`` (nibabel's
  convention: RAS+ means x increases to the subject's Right, y to Anterior,
  z to Superior; the real CT in ``shared/data`` has its liver at x = +76 mm and
  its spleen at x = -94 mm). So the liver has positive ``lat``, the spleen
  negative.
- ``ap``: + towards anterior (RAS+ ``y``), 0 at the centre of the abdominal
  cavity.
- ``sup``: + towards superior (RAS+ ``z``); the liver dome is near ``sup`` = 100.

Organ shapes are unions of ellipsoids ("lobes") minus subtracted ellipsoids
(e.g. the renal hilum). Vessels are tubes with an elliptic section whose
centre line is interpolated between knots along ``sup``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

#: Contrast phases, in the column order of :data:`TISSUE_HU`.
PHASES: tuple[str, ...] = ("pre", "arterial", "portal")


@dataclass(frozen=True)
class Lobe:
    """One ellipsoid of an organ, in the anatomical frame (mm, degrees).

    ``euler_deg`` are intrinsic rotations about (sup, lat, ap), applied as
    ``scipy.spatial.transform.Rotation.from_euler("zxy", euler_deg)``.
    """

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    euler_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    subtract: bool = False


@dataclass(frozen=True)
class VesselKnot:
    """A centre-line point of a tube: at height ``sup_mm``, centre and semi-axes of its section."""

    sup_mm: float
    lat_mm: float
    ap_mm: float
    semi_lat_mm: float
    semi_ap_mm: float


# --------------------------------------------------------------------------
# Hounsfield units: tissue -> (pre, arterial, portal)
# --------------------------------------------------------------------------

#: Mean HU of each tissue in each phase (columns follow :data:`PHASES`).
#: Organ rows are what the organ's voxels show; kidneys give the cortex, the
#: medulla has its own row (cortico-medullary differentiation in the arterial
#: phase, homogeneous later).
TISSUE_HU: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        "liver": (55.0, 70.0, 110.0),
        "spleen": (45.0, 120.0, 110.0),
        "kidney_right": (30.0, 180.0, 160.0),
        "kidney_left": (30.0, 180.0, 160.0),
        "kidney_medulla": (30.0, 70.0, 140.0),
        "gallbladder": (10.0, 10.0, 12.0),
        "stomach": (40.0, 90.0, 100.0),  # the wall; the lumen is fluid and gas
        "stomach_fluid": (10.0, 10.0, 10.0),
        "aorta": (40.0, 300.0, 160.0),
        "inferior_vena_cava": (40.0, 80.0, 140.0),
        "pancreas": (40.0, 100.0, 90.0),
        "pancreatic_mass": (35.0, 45.0, 50.0),  # hypo-attenuating adenocarcinoma
        "muscle": (50.0, 55.0, 60.0),
        "bowel": (35.0, 60.0, 75.0),
        "fat": (-100.0, -100.0, -100.0),
        "visceral_fat": (-90.0, -90.0, -90.0),
        "gas": (-950.0, -950.0, -950.0),
        "air": (-1000.0, -1000.0, -1000.0),
        "bone_cortical": (850.0, 850.0, 850.0),
        "bone_cancellous": (250.0, 250.0, 250.0),
        "disc": (90.0, 90.0, 90.0),
        "csf": (10.0, 10.0, 10.0),
        "couch": (-300.0, -300.0, -300.0),
        "metal": (3500.0, 3500.0, 3500.0),
    }
)

#: Stored CT values are clipped to the 12-bit range scanners write.
HU_MIN, HU_MAX = -1024.0, 3071.0


def tissue_hu(tissue: str, phase: str) -> float:
    """Mean HU of ``tissue`` in ``phase`` (a table lookup)."""
    return TISSUE_HU[tissue][PHASES.index(phase)]


# --------------------------------------------------------------------------
# Organ shapes
# --------------------------------------------------------------------------

#: Organ name -> lobes. Subtracted lobes carve a hole (the renal hilum).
ORGAN_LOBES: Mapping[str, tuple[Lobe, ...]] = MappingProxyType(
    {
        "liver": (
            Lobe((64.0, -8.0, 36.0), (76.0, 80.0, 70.0), (10.0, 0.0, 0.0)),  # right lobe
            Lobe((-18.0, 38.0, 58.0), (60.0, 32.0, 32.0), (-15.0, 0.0, 8.0)),  # left lobe
            Lobe((20.0, 12.0, 62.0), (40.0, 45.0, 32.0)),  # dome between the lobes
        ),
        "spleen": (Lobe((-84.0, -38.0, 55.0), (28.0, 56.0, 46.0), (-35.0, 0.0, 0.0)),),
        "kidney_right": (
            Lobe((74.0, -46.0, -28.0), (31.0, 27.0, 57.0), (-30.0, 0.0, 12.0)),
            Lobe((49.0, -38.0, -28.0), (13.0, 11.0, 20.0), subtract=True),  # hilum
        ),
        "kidney_left": (
            Lobe((-74.0, -44.0, -12.0), (31.0, 27.0, 57.0), (30.0, 0.0, -12.0)),
            Lobe((-49.0, -36.0, -12.0), (13.0, 11.0, 20.0), subtract=True),
        ),
        "gallbladder": (Lobe((42.0, 32.0, -4.0), (15.0, 17.0, 32.0), (0.0, 30.0, 0.0)),),
        "stomach": (
            Lobe((-52.0, 0.0, 72.0), (34.0, 34.0, 28.0)),  # fundus
            Lobe((-42.0, 28.0, 34.0), (36.0, 28.0, 42.0), (0.0, -20.0, 15.0)),  # body
            Lobe((-5.0, 55.0, 6.0), (36.0, 20.0, 20.0), (25.0, 0.0, 0.0)),  # antrum
        ),
        "pancreas": (
            Lobe((30.0, 2.0, -14.0), (20.0, 16.0, 25.0)),  # head
            Lobe((2.0, 12.0, -2.0), (30.0, 13.0, 13.0), (-10.0, 0.0, 0.0)),  # neck and body, in front of the aorta
            Lobe((-42.0, 2.0, 8.0), (32.0, 12.0, 13.0), (25.0, 0.0, 0.0)),  # tail, going back to the left
            Lobe((-66.0, -10.0, 18.0), (15.0, 10.0, 11.0), (35.0, 0.0, 0.0)),  # tail tip, at the splenic hilum
        ),
    }
)

#: Vessel name -> centre-line knots, top (superior) to bottom.
VESSEL_KNOTS: Mapping[str, tuple[VesselKnot, ...]] = MappingProxyType(
    {
        # left-anterior of the vertebral body
        "aorta": (
            VesselKnot(130.0, -10.0, -28.0, 12.0, 12.0),
            VesselKnot(40.0, -12.0, -24.0, 12.0, 12.0),
            VesselKnot(-60.0, -15.0, -22.0, 11.0, 11.0),
            VesselKnot(-160.0, -18.0, -20.0, 10.0, 10.0),
        ),
        # right of the aorta; intrahepatic (anterior, in the liver) above the kidneys
        "inferior_vena_cava": (
            VesselKnot(130.0, 22.0, -4.0, 14.0, 12.0),
            VesselKnot(60.0, 24.0, -10.0, 14.0, 11.0),
            VesselKnot(0.0, 24.0, -24.0, 13.0, 10.0),
            VesselKnot(-160.0, 22.0, -26.0, 12.0, 9.0),
        ),
    }
)

#: Painting order: a later organ wins where shapes touch. Vessels last, so they
#: stay continuous tubes; the liver first, so it is what smaller organs indent.
PAINT_ORDER: tuple[str, ...] = (
    "liver",
    "stomach",
    "spleen",
    "pancreas",
    "kidney_right",
    "kidney_left",
    "gallbladder",
    "inferior_vena_cava",
    "aorta",
)

#: Inner core of an organ with its own HU: organ -> (tissue, fraction of the
#: normalised ellipsoid radius). Kidney medulla sits inside the cortex.
ORGAN_CORES: Mapping[str, tuple[str, float]] = MappingProxyType(
    {"kidney_right": ("kidney_medulla", 0.62), "kidney_left": ("kidney_medulla", 0.62)}
)

#: Stomach wall thickness (mm); inside it is the lumen (fluid, with gas on top).
STOMACH_WALL_MM = 4.0

#: Plausible organ volumes (mL) of a normal adult, as in the phantoms at any
#: spacing. Aorta and IVC volumes are of the imaged segment (~ 200-250 mm).
PLAUSIBLE_VOLUME_ML: Mapping[str, tuple[float, float]] = MappingProxyType(
    {
        "spleen": (100.0, 400.0),
        "kidney_right": (100.0, 250.0),
        "kidney_left": (100.0, 250.0),
        "gallbladder": (10.0, 80.0),
        "liver": (1000.0, 2500.0),
        "stomach": (150.0, 900.0),
        "aorta": (40.0, 200.0),
        "inferior_vena_cava": (30.0, 200.0),
        "pancreas": (40.0, 150.0),
    }
)

# --------------------------------------------------------------------------
# Body wall, spine, ribs (mm, anatomical frame)
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class BodyPlan:
    """Trunk geometry. The cavity is a super-ellipse ``|lat/a|^p + |ap/b|^p <= 1``."""

    cavity_semi_mm: tuple[float, float] = (118.0, 84.0)
    cavity_exponent: float = 2.0
    # bowel loops fill the cavity where a smooth field exceeds a threshold that rises above ``bowel_rise_from_mm``
    bowel_threshold_range: tuple[float, float] = (-0.6, 0.0)
    bowel_rise_from_mm: float = 0.0
    bowel_rise_per_mm: float = 0.025
    bowel_gas_threshold_range: tuple[float, float] = (1.0, 1.6)
    muscle_wall_mm: float = 10.0
    fat_mm_range: tuple[float, float] = (10.0, 24.0)
    anterior_fat_factor: float = 1.25
    # vertebral body: centre (lat, ap), semi-axes; canal and spinous process behind it
    vertebra_centre_mm: tuple[float, float] = (0.0, -52.0)
    vertebra_semi_mm: tuple[float, float] = (21.0, 17.0)
    vertebra_height_mm: float = 27.0
    disc_height_mm: float = 8.0
    cortical_mm: float = 3.0
    canal_offset_mm: float = 27.0
    canal_radius_mm: float = 8.0
    arch_radius_mm: float = 13.0
    spinous_semi_mm: tuple[float, float] = (5.0, 14.0)
    spinous_offset_mm: float = 46.0
    # paraspinal muscles (lat offset, ap) and semi-axes
    paraspinal_centre_mm: tuple[float, float] = (33.0, -84.0)
    paraspinal_semi_mm: tuple[float, float] = (24.0, 20.0)
    # psoas: appears below ``psoas_top_mm`` and grows to ``psoas_semi_mm`` over ``psoas_growth_mm``
    psoas_centre_mm: tuple[float, float] = (36.0, -50.0)
    psoas_semi_mm: tuple[float, float] = (22.0, 19.0)
    psoas_top_mm: float = 20.0
    psoas_growth_mm: float = 120.0
    # ribs: in the wall above ``ribs_bottom_mm``, every ``rib_period_mm``, sloping down anteriorly
    ribs_bottom_mm: float = 10.0
    rib_period_mm: float = 34.0
    rib_thickness_mm: float = 9.0
    rib_depth_mm: float = 7.0
    rib_slope_mm_per_rad: float = 22.0
    # gap (radians) around the anterior midline where there are no ribs (costal cartilage region)
    rib_anterior_gap_rad: float = 0.9
    # couch below the patient
    couch_gap_mm: float = 6.0
    couch_thickness_mm: float = 8.0
    couch_half_width_mm: float = 150.0


BODY_PLAN = BodyPlan()

#: Field of view: lateral and antero-posterior extent (mm); the craniocaudal
#: extent is drawn per case from ``FOV_SUP_RANGE_MM`` unless a spec fixes it.
FOV_AXIAL_MM: tuple[float, float] = (360.0, 280.0)
FOV_SUP_RANGE_MM: tuple[float, float] = (205.0, 245.0)
#: Height (``sup``, mm) of the top of the field of view: a little above the liver dome (``sup`` ~ 100).
FOV_TOP_SUP_RANGE_MM: tuple[float, float] = (105.0, 118.0)

__all__ = [
    "BODY_PLAN",
    "BodyPlan",
    "FOV_AXIAL_MM",
    "FOV_SUP_RANGE_MM",
    "FOV_TOP_SUP_RANGE_MM",
    "HU_MAX",
    "HU_MIN",
    "Lobe",
    "ORGAN_CORES",
    "ORGAN_LOBES",
    "PAINT_ORDER",
    "PHASES",
    "PLAUSIBLE_VOLUME_ML",
    "STOMACH_WALL_MM",
    "TISSUE_HU",
    "VESSEL_KNOTS",
    "VesselKnot",
    "tissue_hu",
]
