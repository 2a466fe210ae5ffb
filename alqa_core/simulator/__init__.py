"""Campaign simulator: compare selection strategies on phantoms with known ground truth.

- :mod:`.oracle`: the oracle annotator (ground-truth answers, QA grades from Dice, hard-case share);
- :mod:`.loop`: :func:`simulate` (ingest, M_0, rounds of predict/select/answer/fine-tune/score);
- :mod:`.report`: :func:`compare_strategies` (paired tests) and :func:`write_report`;
- :mod:`.run`: :func:`simulation_config` from flat options and :func:`run_simulation` (CLI and Dagster job).
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "error_model": ["ErrorEvent", "ErrorModelCase", "ErrorModelConfig", "failure_cases", "make_members", "signed_distance_mm", "soft_channel"],
        "error_modes": ["Change", "KIDNEYS", "MAJOR_BLOB_MAX_ML", "MINOR_MODES", "MODES", "MODE_FUNCTIONS", "ModeResult", "SHIFT_PATCH_MM", "SPLEEN_LIVER", "applicable_organs", "equivalent_radius_mm", "neighbour_of"],
        "evidence": ["DEPTHS", "EVIDENCE_STRATEGIES", "EvidenceConfig", "EvidenceResult", "HEADLINE_DEPTH", "SeedResult", "TUNED_ATTENTION", "TUNED_MEASURE", "prepare_cases", "recall_curve", "run_evidence", "run_seed", "run_strategy"],
        "evidence_cases": ["CROP_MARGIN_VOX", "CaseSource", "EvidenceCase", "attention_scores", "crop_in_plane", "error_masks", "ground_truth", "label_sources", "landed_events", "original_label", "phantom_sources", "prepare_case"],
        "evidence_report": ["EvidenceReportPaths", "attention_table", "dataset_paired_tests", "recall_summary", "rounds_summary", "write_evidence_report"],
        "loop": ["ROUND_COLUMNS", "SimulationConfig", "SimulationProgress", "SimulationResult", "VOLUME_QUEUES", "simulate"],
        "oracle": ["FAILURE_DICE", "USABLE_DICE", "answer_slices", "answer_volume", "grade_from_dice", "ground_truth_path", "hard_case_share", "oracle_grade", "present_organs", "read_manifest", "worst_organ_grade"],
        "report": ["PAIRED_COLUMNS", "ReportPaths", "compare_strategies", "write_report"],
        "run": ["DEFAULT_STRATEGIES", "EvidenceRun", "OWNER_MARKER", "SimulationRun", "evidence_config", "phantom_root_of", "run_evidence_simulation", "run_simulation", "simulation_config"],
        "steps": ["ORACLE_EPOCH", "VOLUME_QUEUES", "attention", "oracle_revision", "priority", "reassembled", "slice_selection", "volume_queue"],
        "tuning": ["TARGET_RECALL", "TUNING_SEEDS", "TuningGrid", "rank_settings", "tune_attention"],
    },
)
