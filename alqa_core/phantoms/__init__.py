"""Synthetic abdominal CT phantoms: alqa's embedded demo data and hidden ground truth.

- :func:`generate_case` / :class:`PhantomSpec`: one CT with its full label map.
- :func:`write_campaign` / :class:`CampaignSpec`: several nnU-Net v2 raw datasets
  with partial labels, plus the ground truth and a manifest.
- :func:`write_dicom_series`: a phantom CT as a DICOM CT series (patient, study, UIDs), for DICOM campaigns.

All of it is deterministic from a seed. Anatomy, HU and hard cases are tables
(:mod:`~alqa_core.phantoms.anatomy`, :mod:`~alqa_core.phantoms.hard_cases`).
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "anatomy": ["BODY_PLAN", "BodyPlan", "FOV_AXIAL_MM", "FOV_SUP_RANGE_MM", "FOV_TOP_SUP_RANGE_MM", "HU_MAX", "HU_MIN", "Lobe", "ORGAN_CORES", "ORGAN_LOBES", "PAINT_ORDER", "PHASES", "PLAUSIBLE_VOLUME_ML", "STOMACH_WALL_MM", "TISSUE_HU", "VESSEL_KNOTS", "VesselKnot", "tissue_hu"],
        "body": ["TrunkDraw", "body_extent_mm", "paint_trunk"],
        "campaign": ["CASE_ID_PATTERN", "CampaignLayout", "CampaignSpec", "CasePlan", "CaseRecord", "DEFAULT_DATASETS", "DEFAULT_PHASE_WEIGHTS", "DatasetSpec", "plan_campaign", "write_campaign"],
        "deform": ["control_shape", "displacement_controls", "random_control", "upsample"],
        "dicom_series": ["RAS_TO_LPS", "SeriesIdentity", "write_dicom_series"],
        "frame": ["Frame", "build_frame"],
        "generate": ["PhantomCase", "PhantomSpec", "TISSUES", "TISSUE_ID", "generate_case"],
        "hard_cases": ["CONTRAST_EXEMPT_TISSUES", "HARD_KINDS", "HardKind", "METAL_PLAN", "MetalPlan", "NO_HARD_KIND", "hard_kind"],
        "shapes": ["PlacedLobe", "bounding_box_mm", "ellipse2d_distance", "ellipsoid_distance", "place_lobe", "superellipse_inside", "tube_bounding_box_mm", "tube_distance", "union_distance"],
    },
)
