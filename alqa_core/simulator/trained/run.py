"""One trained-model simulator run from flat options: what ``alqa simulate`` and the Dagster job both call.

- :func:`simulation_config` builds a :class:`SimulationConfig` from the few knobs a
  user sets (strategies, rounds, effort per round, training length);
- :func:`phantom_root_of` finds the phantom campaign (with its hidden ground
  truth) behind a campaign's datasets;
- :func:`run_simulation` runs :func:`simulate` in an output folder it owns and
  writes the report there and to the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from alqa_core.catalog import Catalog
from alqa_core.config.sections import InferenceConfig, TrainConfig
from alqa_core.errors import AlqaInputError
from alqa_core.simulator.output import claim_output
from alqa_core.simulator.trained.loop import SimulationConfig, SimulationProgress, SimulationResult, simulate
from alqa_core.simulator.trained.report import ReportPaths, write_report

#: the strategies the issue compares at equal effort
DEFAULT_STRATEGIES = ("attention", "uss", "outliers", "fg_random")


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
    claim_output(out)
    result = simulate(campaign_root, out / "work", config, progress=progress)
    paths = write_report(result, out / "report", catalog=catalog, partition=name)
    return SimulationRun(result, paths, out)
