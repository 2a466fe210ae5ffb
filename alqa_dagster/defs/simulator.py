"""The simulator (group ``simulator``), as an asset and a job: compare selection strategies at equal effort before radiologist hours are spent."""

import dagster as dg

from alqa_dagster.metadata import numbers, png_markdown, table
from alqa_dagster.policies import GPU_TAGS
from alqa_dagster.resources import CampaignResource, CatalogResource, DeviceResource, WorkspaceResource


class SimulationSettings(dg.Config):
    """Run config of :func:`campaign_simulation` (the Launchpad shows these)."""

    name: str = "default"
    #: a phantom campaign root; empty = the phantom campaign behind this campaign's datasets
    campaign_root: str = ""
    strategies: list[str] = ["attention", "uss", "outliers", "fg_random"]  # alqa_core.simulator.trained.run.DEFAULT_STRATEGIES
    rounds: int = 3
    #: effort units per round (a whole volume of K slices costs 1 + (K-1)/3)
    budget_per_round: float = 30.0
    members_per_arch: int = 2
    max_epochs: int = 8
    finetune_max_epochs: int = 4
    iterations_per_epoch: int = 12
    patch_size_vox: int = 32
    seed: int = 0
    #: "trained" (networks trained on the phantom campaign) or "error-model" (members made from ground truth, no training)
    members: str = "trained"
    #: error-model: cases per seed, seeds, processes making cases, effort per round (0: 5% of the pool labelled in full)
    cases: int = 1000
    seeds: list[int] = [0, 1, 2, 3, 4]
    workers: int = 2
    error_model_budget: float = 0.0


@dg.asset(
    group_name="simulator",
    kinds={"pytorch", "monai", "parquet"},
    pool="gpu",
    op_tags=GPU_TAGS,
    description="Campaign simulator: an oracle answers queues from the phantom ground truth; every strategy runs the "
    "rounds at the same effort per round and is scored on the same held-out test cases (report.md, CSV, plot, catalog).",
)
def campaign_simulation(
    context: dg.AssetExecutionContext, config: SimulationSettings, campaign: CampaignResource,
    workspace: WorkspaceResource, catalog: CatalogResource, device: DeviceResource,
) -> dg.MaterializeResult:
    from alqa_core.simulator.trained.run import phantom_root_of, run_simulation, simulation_config  # torch: only in the step that runs it

    cfg, layout = campaign.config(), workspace.layout()
    if config.members == "error-model":
        return _error_model_simulation(context, config, layout, catalog)
    root = config.campaign_root or phantom_root_of(d.path for d in cfg.datasets)
    settings = simulation_config(
        config.strategies, config.rounds, config.budget_per_round, members_per_arch=config.members_per_arch,
        max_epochs=config.max_epochs, finetune_max_epochs=config.finetune_max_epochs, iterations_per_epoch=config.iterations_per_epoch,
        patch_size_vox=config.patch_size_vox, seed=config.seed, device=device.device_name(),
    )
    run = run_simulation(root, layout.simulation(config.name), settings, catalog=catalog.catalog(), name=config.name,
                         progress=lambda p: context.log.info(f"{p.stage} {p.strategy} round {p.round_index}: {p.message}"))
    rounds = run.result.rounds
    final = rounds[rounds["round"] == rounds["round"].max()].set_index("strategy")
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.path(str(run.report.report_md)),
        "dice_vs_effort": png_markdown(run.report.dice_plot_png.read_bytes(), "Dice vs effort"),
        "rounds": table(rounds, max_rows=60),
        **numbers(final["dice"].to_dict(), prefix="final_dice_"),
    })


def _error_model_simulation(context, config: SimulationSettings, layout, catalog: CatalogResource) -> dg.MaterializeResult:
    from alqa_core.simulator.error_model.evidence import HEADLINE_DEPTH
    from alqa_core.simulator.error_model.run import evidence_config, run_evidence_simulation

    settings = evidence_config(n_cases=config.cases, seeds=config.seeds, rounds=config.rounds, strategies=config.strategies,
                               budget_per_round=config.error_model_budget or None, workers=config.workers)
    run = run_evidence_simulation(layout.simulation(config.name), settings, catalog=catalog.catalog(), name=config.name, progress=context.log.info)
    rounds, recall = run.result.frame("rounds"), run.result.frame("recall")
    final = rounds[rounds["round"] == rounds["round"].max()].groupby("strategy")["dataset_dice"].mean()
    at5 = recall[recall["depth"].sub(HEADLINE_DEPTH).abs() < 1e-9]["recall_detectable"].mean()
    return dg.MaterializeResult(metadata={
        "report": dg.MetadataValue.path(str(run.report.report_md)),
        "recall_at_depth": png_markdown(run.report.recall_png.read_bytes(), "recall at depth"),
        "dataset_dice_vs_effort": png_markdown(run.report.dataset_png.read_bytes(), "dataset Dice vs effort"),
        "rounds": table(rounds, max_rows=60),
        **numbers({"recall_at_5pct": at5}), **numbers(final.to_dict(), prefix="final_dataset_dice_"),
    })


simulation_job = dg.define_asset_job(
    "simulation_job",
    selection=["campaign_simulation"],
    description="Run the campaign simulator (configure strategies, rounds and effort per round in the Launchpad).",
)
