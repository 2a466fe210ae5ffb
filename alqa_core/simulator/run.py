"""One simulator run from flat options: what the ``alqa simulate`` command and the Dagster job both call.

- :func:`simulation_config` builds a :class:`SimulationConfig` from the few knobs a
  user sets (strategies, rounds, effort per round, training length);
- :func:`phantom_root_of` finds the phantom campaign (with its hidden ground
  truth) behind a campaign's datasets;
- :func:`run_simulation` runs :func:`simulate` in an output folder it owns and
  writes the report there and to the catalog;
- :func:`evidence_config` and :func:`run_evidence_simulation` do the same for
  error-model members (:mod:`.evidence`: no training; optionally tuning the
  attention settings on seeds 100-104 first).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import pandas as pd

from alqa_core.catalog import Catalog
from alqa_core.config.sections import InferenceConfig, TrainConfig
from alqa_core.errors import AlqaInputError
from alqa_core.simulator.error_model import ErrorModelConfig
from alqa_core.simulator.evidence import EVIDENCE_STRATEGIES, EvidenceConfig, EvidenceResult, run_evidence
from alqa_core.simulator.evidence_report import EvidenceReportPaths, write_evidence_report
from alqa_core.simulator.loop import SimulationConfig, SimulationProgress, SimulationResult, simulate
from alqa_core.simulator.report import ReportPaths, write_report
from alqa_core.simulator.tuning import tune_attention

#: the strategies the issue compares at equal effort
DEFAULT_STRATEGIES = ("attention", "uss", "outliers", "fg_random")
#: marks a folder as a simulator's own, so a re-run may clear its working files
OWNER_MARKER = ".alqa-simulation"


@dataclass(frozen=True)
class SimulationRun:
    result: SimulationResult
    report: ReportPaths
    out_dir: Path


def simulation_config(
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    rounds: int = 3,
    budget_per_round: float = 30.0,
    *,
    architectures: Sequence[str] = ("unet",),
    members_per_arch: int = 2,
    model_size: str = "tiny",
    max_epochs: int = 8,
    finetune_max_epochs: int | None = 4,
    iterations_per_epoch: int = 12,
    patch_size_vox: int = 32,
    lr: float | None = None,
    spacing_mm: float | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    num_threads: int | None = None,
    device: str = "auto",
) -> SimulationConfig:
    """A :class:`SimulationConfig` sized by a few flat options (defaults fit a 2-core CPU; see README)."""
    train = TrainConfig(
        patch_size_vox=(patch_size_vox,) * 3,
        max_epochs=max_epochs,
        iterations_per_epoch=iterations_per_epoch,
        lr=lr,
        lr_schedule="constant",
        num_threads=num_threads,
        device=device,
        patience=max(max_epochs, 1),  # short runs: keep the best epoch, never stop early
    )
    window = max(2 * patch_size_vox, 64)
    return SimulationConfig(
        strategies=tuple(strategies),
        rounds=rounds,
        budget_per_round=budget_per_round,
        architectures=tuple(architectures),
        model_size=model_size,
        members_per_arch=members_per_arch,
        train=train,
        inference=InferenceConfig(roi_size_vox=(window,) * 3, sw_batch_size=1, device=device),
        spacing_mm=None if spacing_mm is None else (float(spacing_mm),) * 3,
        test_fraction=test_fraction,
        seed=seed,
        finetune_max_epochs=finetune_max_epochs,
    )


def phantom_root_of(dataset_paths: Iterable[str | Path]) -> Path:
    """The phantom campaign root holding ``ground_truth/manifest.csv`` above the given dataset folders."""
    paths = [Path(p).resolve() for p in dataset_paths]
    roots = {p.parent.parent for p in paths if (p.parent.parent / "ground_truth" / "manifest.csv").is_file()}
    if len(roots) != 1:
        where = paths[0] if paths else None
        raise AlqaInputError(where, "the simulator needs a phantom campaign: no single <campaign>/ground_truth/manifest.csv "
                             f"above the datasets (found {sorted(map(str, roots)) or 'none'})")
    return roots.pop()


def _claim(out_dir: Path) -> None:
    """Make ``out_dir`` the simulator's own: create it, or clear a previous run's working files; never touch a user's folder."""
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / OWNER_MARKER).is_file():
        raise AlqaInputError(out_dir, "exists, is not empty and was not written by the simulator; choose another output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / OWNER_MARKER).touch()
    shutil.rmtree(out_dir / "work", ignore_errors=True)


def run_simulation(
    campaign_root: str | Path,
    out_dir: str | Path,
    config: SimulationConfig,
    *,
    catalog: Catalog | None = None,
    name: str = "simulation",
    progress: Callable[[SimulationProgress], None] | None = None,
) -> SimulationRun:
    """Simulate every strategy in ``out_dir/work``, then write ``out_dir/report`` and the catalog's ``simulation`` rows (partition ``name``)."""
    out = Path(out_dir).resolve()
    _claim(out)
    result = simulate(campaign_root, out / "work", config, progress=progress)
    paths = write_report(result, out / "report", catalog=catalog, partition=name)
    return SimulationRun(result, paths, out)


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
    _claim(out)
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


__all__ = [
    "DEFAULT_STRATEGIES",
    "OWNER_MARKER",
    "EvidenceRun",
    "SimulationRun",
    "evidence_config",
    "phantom_root_of",
    "run_evidence_simulation",
    "run_simulation",
    "simulation_config",
]
