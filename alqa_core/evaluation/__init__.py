"""Stage 6, evaluation: per-organ metrics, their summaries and paired tests, attention-map scoring, the round report.

- :mod:`.segmentation`: Dice, NSD, HD95, MSD, RVE from one surface-distance pass (MONAI, torch);
- :mod:`.statistics`: mean, sd, 5th/95th percentiles; paired t-test and Wilcoxon (scipy);
- :mod:`.attention_eval`: component-level attention sensitivity and precision (003, Table 1);
- :mod:`.report`: the round's evaluation report on held-out labels.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "attention_eval": ["AttentionScore", "DEFAULT_MIN_ERROR_ML", "error_region", "evaluate_attention", "score_attention"],
        "overlap": ["organ_dice"],
        "report": ["compare_rounds", "evaluate_round", "summary_frame"],
        "segmentation": ["DEFAULT_TOLERANCE_MM", "OrganMetrics", "SurfaceDistances", "evaluate_case", "mask_metrics", "surface_distances", "to_records"],
        "statistics": ["Description", "MetricSummary", "PAIRED_COLUMNS", "PairedTest", "SEGMENTATION_METRICS", "describe", "paired_tests", "summarize"],
    },
)
