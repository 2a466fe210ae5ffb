"""The error-model simulator: ensembles made from the ground truth with controlled errors, measured at scale without training.

- :mod:`.modes`: the geometry of each error mode (changes to ground-truth organ masks);
- :mod:`.members`: :func:`make_members`, a case's simulated ensemble and its error events;
- :mod:`.cases`: one case prepared through the platform's own steps (truth, members, attention);
- :mod:`.evidence`: the seeds, rounds and strategies of one campaign (:func:`run_evidence`);
- :mod:`.tuning`: the attention settings tuned on seeds 100-104, never on the reported ones;
- :mod:`.report`: ``report.md`` and its figures;
- :mod:`.run`: :func:`evidence_config` from flat options and :func:`run_evidence_simulation` (CLI and Dagster job).
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "cases": ["CROP_MARGIN_VOX", "CaseSource", "EvidenceCase", "attention_scores", "crop_in_plane", "error_masks", "ground_truth", "label_sources", "landed_events", "original_label", "phantom_sources", "prepare_case"],
        "evidence": ["DEPTHS", "EVIDENCE_STRATEGIES", "EvidenceConfig", "EvidenceResult", "HEADLINE_DEPTH", "SeedResult", "TUNED_ATTENTION", "TUNED_MEASURE", "prepare_cases", "recall_curve", "run_evidence", "run_seed", "run_strategy"],
        "members": ["ErrorEvent", "ErrorModelCase", "ErrorModelConfig", "failure_cases", "make_members", "signed_distance_mm", "soft_channel"],
        "modes": ["Change", "KIDNEYS", "MAJOR_BLOB_MAX_ML", "MINOR_MODES", "MODES", "MODE_FUNCTIONS", "ModeResult", "SHIFT_PATCH_MM", "SPLEEN_LIVER", "applicable_organs", "equivalent_radius_mm", "neighbour_of"],
        "report": ["EvidenceReportPaths", "attention_table", "dataset_paired_tests", "recall_summary", "rounds_summary", "write_evidence_report"],
        "run": ["EvidenceRun", "evidence_config", "run_evidence_simulation"],
        "tuning": ["TARGET_RECALL", "TUNING_SEEDS", "TuningGrid", "rank_settings", "tune_attention"],
    },
)
