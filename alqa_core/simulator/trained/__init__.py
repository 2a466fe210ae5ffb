"""The trained-model simulator: real tiny networks on a phantom campaign, answered by the oracle.

- :mod:`.loop`: :func:`simulate` (ingest, M_0, rounds of predict/select/answer/fine-tune/score);
- :mod:`.report`: :func:`compare_strategies` (paired tests) and :func:`write_report`;
- :mod:`.run`: :func:`simulation_config` from flat options and :func:`run_simulation` (CLI and Dagster job).
"""

import lazy_loader as lazy

__getattr__, __dir__, __all__ = lazy.attach(
    __name__,
    submod_attrs={
        "loop": ["ROUND_COLUMNS", "SimulationConfig", "SimulationProgress", "SimulationResult", "VOLUME_QUEUES", "simulate"],
        "report": ["ReportPaths", "compare_strategies", "write_report"],
        "run": ["DEFAULT_STRATEGIES", "SimulationRun", "phantom_root_of", "run_simulation", "simulation_config"],
    },
)
