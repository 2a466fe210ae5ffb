"""Campaign simulator: compare selection strategies on phantoms with known ground truth.

- :mod:`.oracle`: the oracle annotator (ground-truth answers, QA grades from Dice, hard-case share);
- :mod:`.loop`: :func:`simulate` (ingest, M_0, rounds of predict/select/answer/fine-tune/score);
- :mod:`.report`: :func:`compare_strategies` (paired tests) and :func:`write_report`;
- :mod:`.run`: :func:`simulation_config` from flat options and :func:`run_simulation` (CLI and Dagster job);
  :func:`evidence_config` and :func:`run_evidence_simulation` for error-model members;
- :mod:`.steps`: the round's steps through the platform's own functions (both simulators' one round implementation);
- :mod:`.error_modes`, :mod:`.error_model`: error-model ensembles made from ground truth with controlled errors;
- :mod:`.evidence_cases`, :mod:`.evidence`: the error-model campaign (cases, rounds without training, recall, Table 1, dataset Dice);
- :mod:`.evidence_report`: its report (three figures, CSVs, catalog rows); :mod:`.tuning`: attention settings tuned on seeds 100-104.
"""

import lazy_loader as lazy

# The public face: names other packages may use, each loaded from its module on first use
# (so importing one light module never loads the torch-backed ones beside it).
__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "loop": ["ROUND_COLUMNS", "SimulationConfig", "SimulationProgress", "SimulationResult", "VOLUME_QUEUES", "simulate"],
        "oracle": ["FAILURE_DICE", "USABLE_DICE", "answer_slices", "answer_volume", "grade_from_dice", "ground_truth_path", "hard_case_share", "oracle_grade", "present_organs", "read_manifest", "worst_organ_grade"],
        "report": ["PAIRED_COLUMNS", "ReportPaths", "compare_strategies", "write_report"],
        "run": ["DEFAULT_STRATEGIES", "OWNER_MARKER", "EvidenceRun", "SimulationRun", "evidence_config", "phantom_root_of", "run_evidence_simulation", "run_simulation", "simulation_config"],
        "steps": ["ORACLE_EPOCH", "attention", "oracle_revision", "priority", "reassembled", "slice_selection", "volume_queue"],
        "error_modes": ["MINOR_MODES", "MODES", "MODE_FUNCTIONS", "Change", "ModeResult", "applicable_organs", "neighbour_of"],
        "error_model": ["ErrorEvent", "ErrorModelCase", "ErrorModelConfig", "failure_cases", "make_members", "signed_distance_mm", "soft_channel"],
        "evidence_cases": ["CaseSource", "EvidenceCase", "attention_scores", "crop_in_plane", "error_masks", "ground_truth", "label_sources", "landed_events", "original_label", "phantom_sources", "prepare_case"],
        "evidence": ["DEPTHS", "EVIDENCE_STRATEGIES", "HEADLINE_DEPTH", "TUNED_ATTENTION", "TUNED_MEASURE", "EvidenceConfig", "EvidenceResult", "SeedResult", "prepare_cases", "recall_curve", "run_evidence", "run_seed", "run_strategy"],
        "evidence_report": ["EvidenceReportPaths", "attention_table", "dataset_paired_tests", "recall_summary", "rounds_summary", "write_evidence_report"],
        "tuning": ["TARGET_RECALL", "TUNING_SEEDS", "TuningGrid", "rank_settings", "tune_attention"],
    },
)
