"""Slice- and volume-level query strategies at equal annotation effort (004_03246784a706ec26.txt).

- :mod:`.uncertainty`: slice uncertainty curves, candidate slices, volume uncertainty;
- :mod:`.effort`: the effort model (a volume's first slice 1, each further slice 1/3);
- :mod:`.selection`: USS, RSS, UVS, RVS and foreground-aware random, by name;
- :mod:`.partial`: training cases annotated on selected slices only.
"""

from alqa_core.strategies.effort import (
    DEFAULT_EFFORT_MODEL,
    BudgetFiller,
    EffortModel,
    case_effort,
    effort,
    volume_effort,
)
from alqa_core.strategies.partial import (
    annotated_voxels_for_slices,
    partial_training_case,
    selection_training_cases,
)
from alqa_core.strategies.selection import (
    NNACTIVE_FOREGROUND_SHARE,
    STRATEGIES,
    Selection,
    SliceSelection,
    foreground_random_sampling,
    random_slice_sampling,
    random_volume_sampling,
    select,
    uncertainty_slice_sampling,
    uncertainty_volume_sampling,
)
from alqa_core.strategies.uncertainty import (
    MIN_PEAK_DISTANCE_SLICES,
    VOLUME_DILATION_VOX,
    CaseUncertainty,
    candidate_slices,
    case_uncertainty,
    dilated_foreground,
    slice_uncertainty,
    volume_uncertainty,
)

__all__ = [
    "DEFAULT_EFFORT_MODEL",
    "MIN_PEAK_DISTANCE_SLICES",
    "NNACTIVE_FOREGROUND_SHARE",
    "STRATEGIES",
    "VOLUME_DILATION_VOX",
    "BudgetFiller",
    "CaseUncertainty",
    "EffortModel",
    "Selection",
    "SliceSelection",
    "annotated_voxels_for_slices",
    "candidate_slices",
    "case_effort",
    "case_uncertainty",
    "dilated_foreground",
    "effort",
    "foreground_random_sampling",
    "partial_training_case",
    "random_slice_sampling",
    "random_volume_sampling",
    "select",
    "selection_training_cases",
    "slice_uncertainty",
    "uncertainty_slice_sampling",
    "uncertainty_volume_sampling",
    "volume_effort",
]
