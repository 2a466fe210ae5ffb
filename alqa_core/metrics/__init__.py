"""Evaluation: segmentation metrics, their summaries and paired tests, and
attention-map scoring. See each submodule's docstring for definitions and
the empty-mask conventions."""

from alqa_core.metrics.attention_eval import (
    DEFAULT_MIN_ERROR_ML,
    AttentionScore,
    error_region,
    evaluate_attention,
    score_attention,
)
from alqa_core.metrics.segmentation import (
    DEFAULT_TOLERANCE_MM,
    OrganMetrics,
    SurfaceDistances,
    evaluate_case,
    mask_metrics,
    surface_distances,
    to_records,
)
from alqa_core.metrics.statistics import (
    SEGMENTATION_METRICS,
    Description,
    MetricSummary,
    PairedTest,
    describe,
    paired_tests,
    summarize,
)

__all__ = [
    "DEFAULT_MIN_ERROR_ML",
    "DEFAULT_TOLERANCE_MM",
    "SEGMENTATION_METRICS",
    "AttentionScore",
    "Description",
    "MetricSummary",
    "OrganMetrics",
    "PairedTest",
    "SurfaceDistances",
    "describe",
    "error_region",
    "evaluate_attention",
    "evaluate_case",
    "mask_metrics",
    "paired_tests",
    "score_attention",
    "summarize",
    "surface_distances",
    "to_records",
]
