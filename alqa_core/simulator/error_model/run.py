"""One error-model simulator run from flat options: what ``alqa simulate --members error-model`` and the Dagster job call.

:func:`evidence_config` builds an :class:`EvidenceConfig` from the few knobs a user sets;
:func:`run_evidence_simulation` optionally tunes the attention settings on seeds 100-104
first (:mod:`.tuning`), runs the reported seeds (:mod:`.evidence`) and writes the report.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.simulator.error_model.evidence import EVIDENCE_STRATEGIES, EvidenceConfig, EvidenceResult, run_evidence
from alqa_core.simulator.error_model.members import ErrorModelConfig
from alqa_core.simulator.error_model.report import EvidenceReportPaths, write_evidence_report
from alqa_core.simulator.error_model.tuning import tune_attention
from alqa_core.simulator.output import claim_output


@dataclass(frozen=True)
class EvidenceRun:
    result: EvidenceResult
    report: EvidenceReportPaths
    out_dir: Path
    #: the tuning table (seeds 100-104), when this run tuned first
    tuning: pd.DataFrame | None = None


def evidence_config(
    *,
    n_cases: int = 1000,
    seeds: Sequence[int] = (0, 1, 2, 3, 4),
    rounds: int = 3,
    strategies: Sequence[str] = EVIDENCE_STRATEGIES,
    budget_per_round: float | None = None,
    spacing_mm: float = 4.0,
    n_members: int = 3,
    failure_share: float = 0.05,
    shared_share: float = 0.1,
    label_paths: Sequence[str | Path] = (),
    class_map: str = "total",
    workers: int = 2,
) -> EvidenceConfig:
    """An :class:`EvidenceConfig` from the few knobs a user sets (the attention settings are the tuned ones)."""
    em = ErrorModelConfig(n_members=n_members, failure_share=failure_share, shared_share=shared_share)
    return EvidenceConfig(
        n_cases=n_cases, seeds=tuple(seeds), rounds=rounds, strategies=tuple(strategies), budget_per_round=budget_per_round,
        spacing_mm=spacing_mm, error_model=em, label_paths=tuple(str(p) for p in label_paths), class_map=class_map, workers=workers,
    )


def run_evidence_simulation(
    out_dir: str | Path,
    config: EvidenceConfig,
    *,
    catalog: Catalog | None = None,
    name: str = "simulation",
    tune: bool = False,
    tuning_cases: int | None = None,
    progress: Callable[[str], None] | None = None,
    command: str = "",
) -> EvidenceRun:
    """Error-model members: optionally tune on seeds 100-104, run ``config``'s seeds, write ``out_dir/report`` and the catalog rows."""
    out = Path(out_dir).resolve()
    claim_output(out)
    tuning = None
    if tune:
        tuning = tune_attention(replace(config, n_cases=tuning_cases or config.n_cases), notify=progress)
        best = tuning.iloc[0]
        attention = replace(config.attention, cleaning_radius_mm=float(best.cleaning_radius_mm), uncertainty_threshold=float(best.uncertainty_threshold),
                            inconsistency_threshold=float(best.inconsistency_threshold), min_component_ml=float(best.min_component_ml),
                            cleaning_restore=bool(best.cleaning_restore))
        config = replace(config, attention=attention, measure=str(best.measure))
    result = run_evidence(config, notify=progress)
    paths = write_evidence_report(result, out / "report", catalog=catalog, partition=name, tuning=tuning, command=command)
    return EvidenceRun(result, paths, out, tuning)
