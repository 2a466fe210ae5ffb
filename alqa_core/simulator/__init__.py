"""Campaign simulator: compare selection strategies on phantoms with known ground truth.

- :mod:`.oracle`: the oracle annotator (ground-truth answers, QA grades from Dice, hard-case share);
- :mod:`.loop`: :func:`simulate` (ingest, M_0, rounds of predict/select/answer/fine-tune/score);
- :mod:`.report`: :func:`compare_strategies` (paired tests) and :func:`write_report`;
- :mod:`.run`: :func:`simulation_config` from flat options and :func:`run_simulation` (CLI and Dagster job).
"""

from alqa_core.simulator.loop import ROUND_COLUMNS, VOLUME_QUEUES, SimulationConfig, SimulationProgress, SimulationResult, simulate
from alqa_core.simulator.oracle import (
    answer_slices,
    answer_volume,
    grade_from_dice,
    ground_truth_path,
    hard_case_share,
    oracle_grade,
    present_organs,
    read_manifest,
)
from alqa_core.simulator.report import PAIRED_COLUMNS, ReportPaths, compare_strategies, write_report
from alqa_core.simulator.run import DEFAULT_STRATEGIES, SimulationRun, phantom_root_of, run_simulation, simulation_config

__all__ = [
    "DEFAULT_STRATEGIES",
    "SimulationRun",
    "phantom_root_of",
    "run_simulation",
    "simulation_config",
    "PAIRED_COLUMNS",
    "ROUND_COLUMNS",
    "VOLUME_QUEUES",
    "ReportPaths",
    "SimulationConfig",
    "SimulationProgress",
    "SimulationResult",
    "answer_slices",
    "answer_volume",
    "compare_strategies",
    "grade_from_dice",
    "ground_truth_path",
    "hard_case_share",
    "oracle_grade",
    "present_organs",
    "read_manifest",
    "simulate",
    "write_report",
]
