"""Slice- and volume-level query strategies at equal annotation effort (004_03246784a706ec26.txt).

- :mod:`.uncertainty`: slice uncertainty curves, candidate slices, volume uncertainty;
- :mod:`.effort_model`: the effort model (a volume's first slice 1, each further slice 1/3);
- :mod:`.selection`: what a strategy returns, and the eligibility and budget-filling helpers they share;
- :mod:`.slice_sampling`: USS, RSS and nnActive's foreground-aware random;
- :mod:`.volume_sampling`: UVS and RVS;
- :mod:`.registry`: the strategies by name, and :func:`select`;
- :mod:`.partial`: training cases annotated on selected slices only.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "effort_model": ["BUDGET_EPS", "BudgetFiller", "DEFAULT_EFFORT_MODEL", "EffortModel", "case_effort", "volume_effort"],
        "partial": ["annotated_voxels_for_slices", "partial_training_case", "selection_training_cases"],
        "registry": ["STRATEGIES", "select"],
        "selection": ["Selection", "SliceSelection", "StrategyFn", "effort"],
        "slice_sampling": ["NNACTIVE_FOREGROUND_SHARE", "foreground_random_sampling", "random_slice_sampling", "uncertainty_slice_sampling", "uss_order"],
        "volume_sampling": ["random_volume_sampling", "uncertainty_volume_sampling"],
        "uncertainty": ["CaseUncertainty", "MIN_PEAK_DISTANCE_SLICES", "REDUCTIONS", "VOLUME_DILATION_VOX", "candidate_slices", "case_uncertainty", "dilated_foreground", "slice_uncertainty", "volume_uncertainty"],
    },
)
