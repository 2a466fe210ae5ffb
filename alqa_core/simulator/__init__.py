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
        "loop": ["ROUND_COLUMNS", "SimulationConfig", "SimulationProgress", "SimulationResult", "VOLUME_QUEUES", "simulate"],
        "oracle": ["FAILURE_DICE", "USABLE_DICE", "answer_slices", "answer_volume", "grade_from_dice", "ground_truth_path", "hard_case_share", "oracle_grade", "present_organs", "read_manifest"],
        "report": ["PAIRED_COLUMNS", "ReportPaths", "compare_strategies", "write_report"],
        "run": ["DEFAULT_STRATEGIES", "OWNER_MARKER", "SimulationRun", "phantom_root_of", "run_simulation", "simulation_config"],
    },
)
