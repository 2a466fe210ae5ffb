"""Synthetic abdominal CT phantoms: alqa's embedded demo data and hidden ground truth.

- :func:`generate_case` / :class:`PhantomSpec`: one CT with its full label map.
- :func:`write_campaign` / :class:`CampaignSpec`: several nnU-Net v2 raw datasets
  with partial labels, plus the ground truth and a manifest.

All of it is deterministic from a seed. Anatomy, HU and hard cases are tables
(:mod:`~alqa_core.phantoms.anatomy`, :mod:`~alqa_core.phantoms.hard_cases`).
"""

from alqa_core.phantoms.anatomy import PHASES, PLAUSIBLE_VOLUME_ML, TISSUE_HU, tissue_hu
from alqa_core.phantoms.campaign import (
    DEFAULT_DATASETS,
    CampaignLayout,
    CampaignSpec,
    CasePlan,
    CaseRecord,
    DatasetSpec,
    plan_campaign,
    write_campaign,
)
from alqa_core.phantoms.generate import PhantomCase, PhantomSpec, generate_case
from alqa_core.phantoms.hard_cases import HARD_KINDS, HardKind

__all__ = [
    "DEFAULT_DATASETS",
    "HARD_KINDS",
    "PHASES",
    "PLAUSIBLE_VOLUME_ML",
    "TISSUE_HU",
    "CampaignLayout",
    "CampaignSpec",
    "CasePlan",
    "CaseRecord",
    "DatasetSpec",
    "HardKind",
    "PhantomCase",
    "PhantomSpec",
    "generate_case",
    "plan_campaign",
    "tissue_hu",
    "write_campaign",
]
